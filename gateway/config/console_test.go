package config

import (
	"strings"
	"testing"
)

const ssoSection = "sso:\n  issuer: https://idp.corp.example/\n  client_id: dstm-client\n"

func TestConsoleSection(t *testing.T) {
	const ok = "console:\n  listen: \"[::]:8443\"\n  url: https://gw.corp.example:8443\n"
	tests := []struct {
		name, yaml, want string // want "" : valid
	}{
		{"certificates only", ok + "  admins: [alice@corp.example, ops.corp.example]\n", ""},
		{"with sso", ssoSection + ok + "  client_id: dstm-console\n  client_secret_file: /etc/dstm/console.secret\n", ""},
		{"url with a trailing slash", "console:\n  listen: \":8443\"\n  url: https://gw.corp.example/\n", ""},
		{"no listen", "console:\n  url: https://gw.corp.example\n", `console.listen: "" is not host:port`},
		{"listen port", "console:\n  listen: \"[::]:99999\"\n  url: https://gw.corp.example\n", "console.listen"},
		{"no url", "console:\n  listen: \":8443\"\n", "console.url: required"},
		{"http url", "console:\n  listen: \":8443\"\n  url: http://gw.corp.example\n", "console.url: \"http://gw.corp.example\" is not an https URL"},
		{"url path", "console:\n  listen: \":8443\"\n  url: https://gw.corp.example/console\n", "without a path"},
		{"url query", "console:\n  listen: \":8443\"\n  url: https://gw.corp.example?a=b\n", "without a path, query"},
		{"url credentials", "console:\n  listen: \":8443\"\n  url: https://u:p@gw.corp.example\n", "carries credentials"},
		{"sso without client", ssoSection + ok, "console.client_id: required with the sso section"},
		{"sso relative secret", ssoSection + ok + "  client_id: c\n  client_secret_file: console.secret\n", "console.client_secret_file: must be an absolute path"},
		{"client without sso", ok + "  client_id: c\n", "console.client_id: set, but there is no sso section"},
		{"secret without sso", ok + "  client_secret_file: /etc/dstm/s\n", "console.client_secret_file: set, but there is no sso section"},
		{"admin with a space", ok + "  admins: [\"alice @corp.example\"]\n", "console.admins[0]"},
		{"admin upper case", ok + "  admins: [Alice@corp.example]\n", "console.admins[0]: \"Alice@corp.example\": write e-mail identities in lower case"},
		{"admin twice", ok + "  admins: [a@corp.example, a@corp.example]\n", `console.admins[1]: "a@corp.example" is listed twice`},
		{"unknown key", ok + "  secret: x\n", "field secret not found"},
		{"tep node", "roles: [tep]\ntep:\n  ipv6: 2001:db8::1\n  inner_v4: 192.0.2.1\nstore:\n  etcd:\n    endpoints: [\"http://e1:2379\"]\n" + ok, "console: served by nodes with the control role"},
		{"sso issuer", "sso:\n  issuer: http://idp\n  client_id: c\n", "sso.issuer"},
		{"sso group", "sso:\n  issuer: https://idp/\n  client_id: c\n  groups: {eng: nowhere}\n", `sso.groups["eng"]: policy group "nowhere" is not defined`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := Parse([]byte(tt.yaml))
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tt.want == "":
				if cfg.Console == nil || cfg.Console.Origin() == "" {
					t.Fatalf("console section lost: %+v", cfg.Console)
				}
			case err == nil:
				t.Fatalf("accepted:\n%s", tt.yaml)
			case !strings.Contains(err.Error(), tt.want):
				t.Fatalf("error %q does not mention %q", err, tt.want)
			}
		})
	}
}

func TestConsoleOrigin(t *testing.T) {
	tests := []struct{ url, origin, host string }{
		{"https://GW.corp.example:8443", "https://gw.corp.example:8443", "GW.corp.example"},
		{"https://gw.corp.example/", "https://gw.corp.example", "gw.corp.example"},
		{"https://[2001:db8::1]:8443", "https://[2001:db8::1]:8443", "2001:db8::1"},
	}
	for _, tt := range tests {
		c := Console{URL: tt.url}
		if got := c.Origin(); got != tt.origin {
			t.Errorf("Origin(%s) = %q, want %q", tt.url, got, tt.origin)
		}
		if got := c.Host(); got != tt.host {
			t.Errorf("Host(%s) = %q, want %q", tt.url, got, tt.host)
		}
	}
}
