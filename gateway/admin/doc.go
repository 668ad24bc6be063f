// Package admin is the gateway's local administration API: the CLI
// (dstm-gateway leases, sessions, kick, revoke, token, status) talks to the
// running gateway through it.
//
// Transport: HTTP/1.1 with JSON bodies over a unix socket (default
// [DefaultSocket]). The socket has mode 0600, so only the gateway's user
// (normally root) can use it; that file permission is the whole access
// control. [Listen] creates the parent directory (0700) if missing, refuses
// to start when another gateway owns the socket ([ErrInUse]: an flock on
// "<socket>.lock" plus a connect probe), replaces a stale socket left by a
// crash, and never exposes the socket with looser permissions.
//
// Server side: the gateway implements the small [Backend] interface and runs
// [NewServer](backend, logger).[Server.Serve](ctx, path). Backend errors
// wrapping [ErrNotFound], [ErrInvalid] or [ErrUnavailable] are answered with
// 404, 400 or 503; the server validates request fields itself (400) before
// the Backend sees them; anything else is a 500. The error text travels to
// the operator unchanged.
//
// Client side: [NewClient](path) has the Backend's methods. It returns
//
//   - a [*DialError] when the socket cannot be reached, matching
//     [ErrNotRunning] (no socket, or nothing listening: "is dstm-gateway
//     running? socket /run/dstm/admin.sock: connect: no such file or
//     directory") or [ErrPermission] (EACCES/EPERM);
//   - an [*Error] for an error answered by the gateway, matching
//     [ErrNotFound], [ErrInvalid], [ErrUnavailable] or [ErrInternal];
//   - other errors (context cancelled, malformed answer) wrapped as they are.
//
// [ExitCode] maps those errors to the CLI's exit status: 0 ok, 1 other
// failure, 2 invalid request, 3 gateway not running, 4 permission denied, 5
// not found, 6 unavailable.
//
// Output: the Write…Table / Write… functions render results for people with
// text/tabwriter (fixed columns, sorted rows, durations relative to a given
// now); [WriteJSON] renders them for scripts.
package admin
