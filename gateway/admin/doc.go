// Package admin is the gateway's local administration API, used by the CLI
// (dstm-gateway leases, sessions, kick, revoke, token, status).
//
// It is HTTP/1.1 with JSON bodies over a unix socket of mode 0600: the file
// permission is the whole access control, so [Listen] never exposes the
// socket with looser permissions. The gateway implements [Backend] and runs
// [Server.Serve]; [Client] has the Backend's methods, and its errors match
// classes such as [ErrNotRunning] and [ErrNotFound], which [ExitCode] maps to
// the CLI's exit status. The Write… functions render results for people,
// [WriteJSON] for scripts.
package admin
