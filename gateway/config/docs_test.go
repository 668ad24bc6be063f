package config

import (
	"os"
	"reflect"
	"strings"
	"testing"
)

// TestEveryFieldIsDocumented keeps docs/configuration.md from drifting: every YAML key of
// Config must appear in it (as `key`).
func TestEveryFieldIsDocumented(t *testing.T) {
	doc, err := os.ReadFile("../../docs/configuration.md")
	if err != nil {
		t.Fatal(err)
	}
	var walk func(prefix string, typ reflect.Type)
	walk = func(prefix string, typ reflect.Type) {
		for typ.Kind() == reflect.Slice || typ.Kind() == reflect.Pointer {
			typ = typ.Elem()
		}
		if typ.Kind() != reflect.Struct || typ.PkgPath() != reflect.TypeOf(Config{}).PkgPath() {
			return
		}
		for i := range typ.NumField() {
			f := typ.Field(i)
			key := strings.Split(f.Tag.Get("yaml"), ",")[0]
			if key == "" || key == "-" {
				continue
			}
			if !strings.Contains(string(doc), "`"+key+"`") && !strings.Contains(string(doc), "`"+prefix+key+"`") {
				t.Errorf("docs/configuration.md does not document %s%s", prefix, key)
			}
			walk(prefix+key+".", f.Type)
		}
	}
	walk("", reflect.TypeOf(Config{}))
}
