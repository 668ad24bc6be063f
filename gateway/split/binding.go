package split

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"strings"
)

// maxValue bounds a binding's JSON (a real one is about 300 bytes).
const maxValue = 4 << 10

// Binding ties one session of a control node to a TEP: what the TEP needs to admit its data
// channel. It is stored as JSON under bind/<TEP>/<Lease>.
type Binding struct {
	Lease    netip.Addr `json:"lease"`
	Session  string     `json:"session"`
	Identity string     `json:"identity"`
	// Groups are the policy groups of the identity's certificate (its access rules).
	Groups  []string `json:"groups,omitempty"`
	Control string   `json:"control"` // the control node that holds the session
	TEP     string   `json:"tep"`
	// Endpoint is the client's IPv6 address: the outer source of a v4v6 tunnel.
	Endpoint netip.Addr `json:"endpoint,omitzero"`
	// TokenHash is the SHA-256 of the session's data token (hex); the token itself never
	// leaves the control node and the client.
	TokenHash string `json:"token_sha256,omitempty"`
	// Transport is the data transport the client accepted; empty while offered.
	Transport string `json:"transport,omitempty"`
}

// HashToken is the TokenHash of a data token.
func HashToken(token []byte) string {
	h := sha256.Sum256(token)
	return hex.EncodeToString(h[:])
}

// Active says the client accepted the offer (the lease is active).
func (b Binding) Active() bool { return b.Transport != "" }

func (b Binding) validate() error {
	switch {
	case !b.Lease.Is4():
		return fmt.Errorf("lease %v is not an IPv4 address", b.Lease)
	case b.Session == "" || b.Identity == "" || b.TEP == "":
		return errors.New("session, identity or TEP missing")
	case b.Endpoint.IsValid() && !b.Endpoint.Is6():
		return fmt.Errorf("endpoint %v is not an IPv6 address", b.Endpoint)
	case b.TokenHash != "" && len(b.TokenHash) != 2*sha256.Size:
		return errors.New("token hash of the wrong length")
	}
	return nil
}

func encodeBinding(b Binding) ([]byte, error) {
	if err := b.validate(); err != nil {
		return nil, fmt.Errorf("split: binding: %w", err)
	}
	return json.Marshal(b)
}

// decodeBinding reads the binding stored under key (its last two elements are the TEP and
// the lease, which the value must repeat).
func decodeBinding(key string, v []byte) (Binding, error) {
	var b Binding
	if len(v) > maxValue {
		return b, fmt.Errorf("split: binding %s: %d bytes", key, len(v))
	}
	if err := json.Unmarshal(v, &b); err != nil {
		return b, fmt.Errorf("split: binding %s: %w", key, err)
	}
	if err := b.validate(); err != nil {
		return b, fmt.Errorf("split: binding %s: %w", key, err)
	}
	tep, addr, ok := splitKey(key)
	if !ok || tep != b.TEP || addr != b.Lease {
		return b, fmt.Errorf("split: binding %s names TEP %q and lease %v", key, b.TEP, b.Lease)
	}
	return b, nil
}

// keys are the etcd key names of one cluster (the prefix store.etcd.prefix).
type keys struct {
	members string // <prefix>members/<node>
	binds   string // <prefix>bind/<tep>/<lease>
}

func newKeys(prefix, members string) keys {
	return keys{members: members, binds: strings.TrimSuffix(prefix, "/") + "/bind/"}
}

func (k keys) bindingKey(tep string, lease netip.Addr) string {
	return k.binds + tep + "/" + lease.String()
}

func (k keys) tepBinds(tep string) string { return k.binds + tep + "/" }

// splitKey returns the TEP and lease of a binding key's last two elements.
func splitKey(key string) (tep string, lease netip.Addr, ok bool) {
	i := strings.LastIndexByte(key, '/')
	if i <= 0 {
		return "", netip.Addr{}, false
	}
	a, err := netip.ParseAddr(key[i+1:])
	if err != nil || !a.Is4() {
		return "", netip.Addr{}, false
	}
	rest := key[:i]
	j := strings.LastIndexByte(rest, '/')
	if j < 0 || j == len(rest)-1 {
		return "", netip.Addr{}, false
	}
	return rest[j+1:], a, true
}
