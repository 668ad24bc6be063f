package admin

import (
	"errors"
	"os"
	"testing"
)

func TestExitCode(t *testing.T) {
	for _, tt := range []struct {
		err  error
		want int
	}{
		{nil, ExitOK},
		{errors.New("boom"), ExitFailure},
		{&Error{Code: codeInternal}, ExitFailure},
		{&Error{Code: codeInvalid}, ExitUsage},
		{&Error{Code: codeNotFound}, ExitNotFound},
		{&Error{Code: codeUnavailable}, ExitUnavailable},
		{&DialError{Path: "p", Err: os.ErrNotExist}, ExitNotRunning},
	} {
		if got := ExitCode(tt.err); got != tt.want {
			t.Errorf("ExitCode(%v) = %d, want %d", tt.err, got, tt.want)
		}
	}
}
