package storetest_test

import (
	"testing"

	"github.com/dstmgw/dstm/gateway/lease"
	"github.com/dstmgw/dstm/gateway/lease/storetest"
)

func TestMemStore(t *testing.T) {
	storetest.Run(t, func(*testing.T) lease.Store { return lease.NewMemStore() })
}
