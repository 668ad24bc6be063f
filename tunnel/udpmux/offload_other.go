//go:build !linux

package udpmux

import "net"

var offloadOOB = 0

func canGSO(*net.UDPConn) bool              { return false }
func enableGRO(*net.UDPConn) bool           { return false }
func appendGSO(oob []byte, _ uint16) []byte { return oob }
func groSize([]byte) int                    { return 0 }
func gsoRefused(error) (bool, bool)         { return false, false }
