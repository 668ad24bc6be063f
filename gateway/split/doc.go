// Package split lets the control plane and the TEPs run on separate nodes of a cluster
// (roles in gateway.yaml; docs/decisions/0010-split-roles.md). Both sides meet in etcd:
//
//   - A TEP node announces its data plane (outer IPv6 address, inner address, MTU, DTLS
//     port, plain v4v6) in its member record, tied to its ownership lease
//     (etcdstore.Member.TEP).
//   - A control node picks a TEP per session (Directory: the least loaded, or the one the
//     policy names) and writes a Binding under bind/<tep>/<lease>, tied to its own ownership
//     lease, before the offer names that TEP.
//   - The TEP follows its bindings (Follow) and admits a data channel only for a bound
//     session (Binder): the DTLS data token, the v4v6 client endpoint. A binding deleted or
//     moved tears the session down on the TEP.
//
// A TEP whose announcement ends (stopped, killed, cut off from etcd for the TTL) is reported
// to the control nodes, which end its sessions; their clients come back on another TEP with
// the same address.
package split
