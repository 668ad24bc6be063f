package hostnet

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
)

// TestCommands: the commands macOS, FreeBSD and Windows run, as the system tools want them.
func TestCommands(t *testing.T) {
	lease := netip.MustParsePrefix("100.64.0.7/32")
	half := netip.MustParsePrefix("128.0.0.0/1")
	for _, tc := range []struct {
		got  command
		want string
	}{
		{bsdAddAddress("utun5", lease), "ifconfig utun5 inet 100.64.0.7/32 100.64.0.7 alias"},
		{bsdDeleteAddress("utun5", lease), "ifconfig utun5 inet 100.64.0.7 -alias"},
		{bsdLinkUp("utun5"), "ifconfig utun5 up"},
		{bsdAddRoute("utun5", half), "route -q -n add -inet 128.0.0.0/1 -interface utun5"},
		{bsdAddRoute("tun0", netip.MustParsePrefix("10.1.2.3/8")), "route -q -n add -inet 10.0.0.0/8 -interface tun0"},
		{bsdDeleteRoute("utun5", half), "route -q -n delete -inet 128.0.0.0/1 -interface utun5"},
		{netshAddAddress("dstmc0", lease), "netsh interface ipv4 add address name=dstmc0 address=100.64.0.7 mask=255.255.255.255 store=active"},
		{netshDeleteAddress("dstmc0", lease), "netsh interface ipv4 delete address name=dstmc0 address=100.64.0.7 store=active"},
		{netshAddRoute("dstmc0", half), "netsh interface ipv4 add route prefix=128.0.0.0/1 interface=dstmc0 metric=0 store=active"},
		{netshDeleteRoute("dstmc0", half), "netsh interface ipv4 delete route prefix=128.0.0.0/1 interface=dstmc0 store=active"},
	} {
		if got := tc.got.String(); got != tc.want {
			t.Errorf("%s\nwant %s", got, tc.want)
		}
	}
	for bits, want := range map[int]string{0: "0.0.0.0", 1: "128.0.0.0", 8: "255.0.0.0", 20: "255.255.240.0", 32: "255.255.255.255"} {
		if got := mask4(bits); got != want {
			t.Errorf("mask4(%d) = %s, want %s", bits, got, want)
		}
	}
}

// TestCmdHostUndo: every change is undone in reverse order on Close, a change that failed is
// not, and nothing runs after Close.
func TestCmdHostUndo(t *testing.T) {
	var ran []string
	fail := "route -q -n add -inet 10.0.0.0/8 -interface utun5"
	h := &cmdHost{run: func(c command) error {
		ran = append(ran, c.String())
		if c.String() == fail {
			return errors.New("route: File exists")
		}
		return nil
	}}
	lease := netip.MustParsePrefix("100.64.0.7/32")
	if err := h.apply(bsdAddAddress("utun5", lease), bsdDeleteAddress("utun5", lease)); err != nil {
		t.Fatal(err)
	}
	if err := h.apply(bsdAddRoute("utun5", netip.MustParsePrefix("0.0.0.0/1")), bsdDeleteRoute("utun5", netip.MustParsePrefix("0.0.0.0/1"))); err != nil {
		t.Fatal(err)
	}
	if err := h.apply(bsdAddRoute("utun5", netip.MustParsePrefix("10.0.0.0/8")), bsdDeleteRoute("utun5", netip.MustParsePrefix("10.0.0.0/8"))); err == nil {
		t.Fatal("a failed command reported success")
	}
	ran = nil
	if err := h.Close(); err != nil {
		t.Fatal(err)
	}
	want := []string{"route -q -n delete -inet 0.0.0.0/1 -interface utun5", "ifconfig utun5 inet 100.64.0.7 -alias"}
	if strings.Join(ran, "\n") != strings.Join(want, "\n") {
		t.Errorf("undone:\n%s\nwant:\n%s", strings.Join(ran, "\n"), strings.Join(want, "\n"))
	}
	if err := h.apply(bsdLinkUp("utun5"), bsdLinkUp("utun5")); !errors.Is(err, ErrClosed) {
		t.Errorf("apply after Close: %v, want ErrClosed", err)
	}
	if err := h.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}
