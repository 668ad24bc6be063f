package config

import (
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/dstmgw/dstm/auth"
)

// Console configures the web console (docs/console.md): served over HTTPS by a control node,
// with the embedded CA's server certificate. Operators sign in by SSO (with the sso section)
// or with an admin client certificate; users by SSO.
type Console struct {
	// Listen is the HTTPS listener, host:port.
	Listen string `yaml:"listen"`
	// URL is what browsers use, https://HOST[:PORT] without a path; the OIDC redirect is
	// URL + "/auth/callback", and POSTs must come from this origin.
	URL string `yaml:"url"`
	// ClientID is the console's confidential OIDC client at the provider (needs sso).
	ClientID string `yaml:"client_id"`
	// ClientSecretFile holds that client's secret on its first line (needs sso).
	ClientSecretFile string `yaml:"client_secret_file"`
	// Admins are operator identities (SSO or admin client certificate), besides the members
	// of sso.admin_groups.
	Admins []string `yaml:"admins"`
}

// Origin is the console's origin as browsers send it (scheme://host[:port], lower case).
func (c *Console) Origin() string {
	u, err := url.Parse(c.URL)
	if err != nil {
		return ""
	}
	return strings.ToLower(u.Scheme + "://" + u.Host)
}

// Host is the console URL's host name or address, without a port or brackets.
func (c *Console) Host() string {
	u, err := url.Parse(c.URL)
	if err != nil {
		return ""
	}
	return u.Hostname()
}

func (c *Config) validateConsole() []error {
	cs := c.Console
	if cs == nil {
		return nil
	}
	var errs []error
	if !c.Has(RoleControl) {
		errs = append(errs, bad("console", "served by nodes with the control role; this node's roles are %v", c.Roles))
	}
	if err := validHostPort(cs.Listen); err != nil {
		errs = append(errs, bad("console.listen", "%v", err))
	}
	if err := validConsoleURL(cs.URL); err != nil {
		errs = append(errs, bad("console.url", "%v", err))
	}
	if c.SSO != nil {
		if cs.ClientID == "" {
			errs = append(errs, bad("console.client_id", "required with the sso section (the console's confidential client at the provider)"))
		}
		if cs.ClientSecretFile == "" || !filepath.IsAbs(cs.ClientSecretFile) {
			errs = append(errs, bad("console.client_secret_file", "must be an absolute path with the sso section, got %q", cs.ClientSecretFile))
		}
	} else {
		if cs.ClientID != "" {
			errs = append(errs, bad("console.client_id", "set, but there is no sso section: sign-in needs it (operators with an admin certificate need neither)"))
		}
		if cs.ClientSecretFile != "" {
			errs = append(errs, bad("console.client_secret_file", "set, but there is no sso section"))
		}
	}
	seen := map[string]bool{}
	for i, a := range cs.Admins {
		field := fmt.Sprintf("console.admins[%d]", i)
		if err := auth.ValidIdentity(a); err != nil {
			errs = append(errs, bad(field, "%v", err))
			continue
		}
		if strings.Contains(a, "@") && a != strings.ToLower(a) {
			errs = append(errs, bad(field, "%q: write e-mail identities in lower case, as certificates and sign-ins carry them", a))
			continue
		}
		if seen[a] {
			errs = append(errs, bad(field, "%q is listed twice", a))
		}
		seen[a] = true
	}
	return errs
}

// validHostPort checks a listen address: host:port with a numeric port 1..65535 (the host
// may be empty or a bracketed IPv6 address).
func validHostPort(s string) error {
	_, port, err := net.SplitHostPort(s)
	if err != nil {
		return fmt.Errorf("%q is not host:port", s)
	}
	if p, err := strconv.ParseUint(port, 10, 16); err != nil || p == 0 {
		return fmt.Errorf("%q: port %q is not 1..65535", s, port)
	}
	return nil
}

// validConsoleURL checks the console's public URL: https://HOST[:PORT], nothing else.
func validConsoleURL(s string) error {
	u, err := url.Parse(s)
	switch {
	case s == "":
		return fmt.Errorf("required (the https URL browsers use, e.g. https://gw.corp.example:8443)")
	case err != nil:
		return fmt.Errorf("%q: %v", s, err)
	case u.Scheme != "https" || u.Host == "" || u.Hostname() == "":
		return fmt.Errorf("%q is not an https URL with a host", s)
	case u.User != nil:
		return fmt.Errorf("%q carries credentials", s)
	case u.Path != "" && u.Path != "/", u.RawQuery != "", u.Fragment != "":
		return fmt.Errorf("%q: want https://HOST[:PORT] without a path, query or fragment", s)
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.ParseUint(p, 10, 16); err != nil || n == 0 {
			return fmt.Errorf("%q: port %q is not 1..65535", s, p)
		}
	}
	return nil
}
