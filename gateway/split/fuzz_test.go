package split

import (
	"bytes"
	"encoding/json"
	"testing"
)

// FuzzDecodeBinding: any value under any key is a binding that encodes back to what it
// decoded to, or an error; never a panic.
func FuzzDecodeBinding(f *testing.F) {
	f.Add("/dstm/bind/tep1/10.0.0.1", []byte(`{"lease":"10.0.0.1","session":"s-1","identity":"a@b","control":"ctl","tep":"tep1","endpoint":"2001:db8::1","transport":"v4v6"}`))
	f.Add("/dstm/bind/tep1/10.0.0.1", []byte(`{"lease":"10.0.0.2","session":"s-1","identity":"a@b","tep":"tep1"}`))
	f.Add("/dstm/bind//10.0.0.1", []byte(`{}`))
	f.Fuzz(func(t *testing.T, key string, v []byte) {
		b, err := decodeBinding(key, v)
		if err != nil {
			return
		}
		enc, err := encodeBinding(b)
		if err != nil {
			t.Fatalf("decoded %+v does not encode: %v", b, err)
		}
		again, err := decodeBinding(key, enc)
		if err != nil {
			t.Fatalf("re-encoded binding does not decode: %v", err)
		}
		if enc2, _ := json.Marshal(again); !bytes.Equal(enc, enc2) {
			t.Fatalf("round trip changed %s into %s", enc, enc2)
		}
	})
}
