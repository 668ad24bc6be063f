package dtls

import "testing"

// TestVerifyServerNames: with a second name, the chain must still lead to the roots and the
// leaf must be a server certificate for one of the two names.
func TestVerifyServerNames(t *testing.T) {
	ca, other := newTestCA(t, "ca"), newTestCA(t, "other")
	tep := ca.issue(t, "tep1.test", true)
	for _, tc := range []struct {
		name   string
		raw    [][]byte
		roots  *testCA
		names  []string
		accept bool
	}{
		{"the first name", tep.Certificate, ca, []string{"tep1.test", "2001:db8::1"}, true},
		{"the second name", tep.Certificate, ca, []string{"gw.test", "tep1.test"}, true},
		{"neither name", tep.Certificate, ca, []string{"gw.test", "2001:db8::1"}, false},
		{"another CA", tep.Certificate, other, []string{"gw.test", "tep1.test"}, false},
		{"a client certificate", ca.issue(t, "tep1.test", false).Certificate, ca, []string{"tep1.test"}, false},
		{"no certificate", nil, ca, []string{"tep1.test"}, false},
		{"garbage", [][]byte{{1, 2, 3}}, ca, []string{"tep1.test"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := verifyServerNames(tc.roots.pool, tc.names...)(tc.raw, nil)
			if (err == nil) != tc.accept {
				t.Fatalf("accepted %v, want %v (err %v)", err == nil, tc.accept, err)
			}
		})
	}
}
