package main

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/spf13/cobra"

	"github.com/dstmgw/dstm/auth"
	"github.com/dstmgw/dstm/auth/acl"
)

func newPolicyCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "policy",
		Short: "Questions about the policy of the configuration file",
	}
	cmd.AddCommand(newExplainCmd(g))
	return cmd
}

func newExplainCmd(g *globals) *cobra.Command {
	var inbound, asJSON bool
	cmd := &cobra.Command{
		Use:   "explain IDENTITY ADDR PROTO[/PORT]",
		Short: "Say whether the access rules let IDENTITY reach ADDR (tcp/443, udp/53, icmp) and which rule decides",
		Long: `explain judges the first packet of a flow from IDENTITY to ADDR (with --inbound: from ADDR to
IDENTITY's PORT) by the access rules of the configuration file, as the TEP would, and names
the rule that decides. Replies to flows the other side opened pass without a rule; explain
does not judge them.`,
		Example: "  dstm-gateway policy explain alice@corp.example 10.1.2.3 tcp/443",
		Args:    cobra.ExactArgs(3),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := loadConfig(g.config, false)
			if err != nil {
				return err
			}
			if err := auth.ValidIdentity(args[0]); err != nil {
				return usageError{err}
			}
			t, err := explainTarget(args[1], args[2])
			if err != nil {
				return usageError{err}
			}
			pol, err := auth.NewPolicy(cfg.Policy)
			if err != nil {
				return err // Load validated it already
			}
			d := acl.Outbound
			if inbound {
				d = acl.Inbound
			}
			e := pol.Explain(args[0], d, t)
			if asJSON {
				return writeJSON(cmd.OutOrStdout(), e)
			}
			fmt.Fprintln(cmd.OutOrStdout(), e.Text)
			return nil
		},
	}
	cmd.Flags().BoolVar(&inbound, "inbound", false, "a flow from ADDR to the client's PORT")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the decision as JSON")
	return cmd
}

// explainTarget turns "10.1.2.3" "tcp/443" into the target "10.1.2.3:443/tcp".
func explainTarget(addr, protoPort string) (acl.Target, error) {
	a, err := netip.ParseAddr(addr)
	if err != nil || !a.Is4() {
		return acl.Target{}, fmt.Errorf("%q is not an IPv4 address", addr)
	}
	proto, port, hasPort := strings.Cut(strings.ToLower(protoPort), "/")
	if proto == acl.ProtoICMP && !hasPort {
		return acl.ParseTarget(a.String() + "/icmp")
	}
	if !hasPort {
		return acl.Target{}, fmt.Errorf("%q: want tcp/PORT, udp/PORT or icmp", protoPort)
	}
	return acl.ParseTarget(a.String() + ":" + port + "/" + proto)
}
