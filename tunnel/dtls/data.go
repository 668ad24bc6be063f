package dtls

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dstmgw/dstm/tunnel/record"
	piondtls "github.com/pion/dtls/v3"
	"golang.org/x/sys/cpu"
)

// Data records (tunnel/record) take over the packets of a link once both sides agree, in two
// DTLS application records after the bind: the server's offer and the client's accept, each
//
//	"DSTM" kind('O' or 'A') version(1) suite(1) session-id(4)
//
// Neither is a token or an IPv4 packet, so a client or server without data records counts
// it as malformed and goes on with DTLS records (docs/protocol.md).
const (
	negLen      = 11
	negOffer    = 'O'
	negAccept   = 'A'
	dataVersion = 1

	// offerEvery and maxOffers bound the offers a server resends while the client keeps
	// sending DTLS records (the offer was lost, or the client has no data records).
	offerEvery = time.Second
	maxOffers  = 5

	maxDataRecord = maxRecord + record.Overhead
)

type negotiation struct {
	kind    byte
	suite   record.Suite
	session uint32
}

func (n negotiation) marshal() []byte {
	b := make([]byte, negLen)
	copy(b, "DSTM")
	b[4], b[5], b[6] = n.kind, dataVersion, byte(n.suite)
	binary.BigEndian.PutUint32(b[7:], n.session)
	return b
}

// parseNegotiation recognizes an offer or an accept of a version this side speaks.
func parseNegotiation(b []byte) (negotiation, bool) {
	if len(b) != negLen || string(b[:4]) != "DSTM" || (b[4] != negOffer && b[4] != negAccept) ||
		b[5] != dataVersion || !record.Suite(b[6]).Valid() {
		return negotiation{}, false
	}
	return negotiation{kind: b[4], suite: record.Suite(b[6]), session: binary.BigEndian.Uint32(b[7:])}, true
}

// preferredSuite is AES-256-GCM where the CPU has AES and carry-less multiplication,
// ChaCha20-Poly1305 elsewhere.
func preferredSuite() record.Suite {
	if cpu.X86.HasAES && cpu.X86.HasPCLMULQDQ || cpu.ARM64.HasAES && cpu.ARM64.HasPMULL || cpu.S390X.HasAESGCM {
		return record.AES256GCM
	}
	return record.ChaCha20Poly1305
}

// dataPath is a link's data-record keys.
type dataPath struct {
	session uint32
	sealer  *record.Sealer
	opener  *record.Opener
}

// newDataPath exports the session's secrets from conn; server tells the direction.
func newDataPath(conn *piondtls.Conn, suite record.Suite, session uint32, server bool) (*dataPath, error) {
	state, ok := conn.ConnectionState()
	if !ok {
		return nil, fmt.Errorf("dtls: data records: no connection state")
	}
	exp, err := state.ExportKeyingMaterial(record.ExporterLabel, nil, record.ExporterLen)
	if err != nil {
		return nil, fmt.Errorf("dtls: data records: export: %w", err)
	}
	sec, err := record.SplitSecrets(exp)
	if err != nil {
		return nil, err
	}
	send, recv := sec.ClientToServer, sec.ServerToClient
	if server {
		send, recv = recv, send
	}
	s, err := record.NewSealer(suite, send, session)
	if err != nil {
		return nil, err
	}
	o, err := record.NewOpener(suite, recv, session)
	if err != nil {
		return nil, err
	}
	return &dataPath{session: session, sealer: s, opener: o}, nil
}

// dataState is what a link keeps for data records.
type dataState struct {
	path   atomic.Pointer[dataPath] // set once negotiated
	send   atomic.Bool              // packets go out as data records
	remote atomic.Pointer[netip.AddrPort]
	newest atomic.Uint64 // highest counter received + 1
	// write sends one datagram to the peer outside pion (the server's port or the client's
	// socket).
	write func(b []byte, to netip.AddrPort) error
	bufs  sync.Pool // *[]byte of maxDataRecord

	rxMu sync.Mutex // serializes deliveries of received data records (two sockets may read)
	one  [1][]byte

	offers   atomic.Int32
	lastOffr atomic.Int64 // unix nanoseconds of the last offer sent

	drops dataDrops
	total *dataDrops // the server's, nil on a client
	// onRoam runs when a data record from a new address is the newest; nil on a client.
	onRoam func(to netip.AddrPort)
}

// dataDrops counts data records dropped, by reason.
type dataDrops struct {
	forged, replayed, short atomic.Uint64
}

func (d *dataState) drop(c func(*dataDrops) *atomic.Uint64) {
	c(&d.drops).Add(1)
	if d.total != nil {
		c(d.total).Add(1)
	}
}

func forged(d *dataDrops) *atomic.Uint64   { return &d.forged }
func replayed(d *dataDrops) *atomic.Uint64 { return &d.replayed }
func short(d *dataDrops) *atomic.Uint64    { return &d.short }

func (d *dataState) getBuf() *[]byte {
	if b, ok := d.bufs.Get().(*[]byte); ok {
		return b
	}
	b := make([]byte, 0, maxDataRecord)
	return &b
}

// writeData seals each packet into a data record and sends it.
func (l *link) writeData(dp *dataPath, pkts [][]byte) error {
	d := &l.data
	to := *d.remote.Load()
	bp := d.getBuf()
	defer d.bufs.Put(bp)
	for _, p := range pkts {
		if len(p) == 0 {
			continue
		}
		b, err := dp.sealer.Seal((*bp)[:0], p)
		if err != nil {
			return fmt.Errorf("dtls: data record: %w", err)
		}
		*bp = b
		if err := d.write(b, to); err != nil {
			return fmt.Errorf("dtls: write data record: %w", err)
		}
		l.packetsOut.Add(1)
		l.bytesOut.Add(uint64(len(p)))
	}
	return nil
}

// receiveData opens a data record received from from, in place, and delivers its packet. A
// record that opens moves the link's data records to from when it is the newest so far
// (roaming), and proves that the peer speaks data records.
func (l *link) receiveData(b []byte, from netip.AddrPort) {
	d := &l.data
	dp := d.path.Load()
	if dp == nil {
		d.drop(forged) // nothing negotiated: no record can be ours
		return
	}
	pkt, c, err := dp.opener.Open(b)
	switch err {
	case nil:
	case record.ErrShort:
		d.drop(short)
		return
	case record.ErrReplay, record.ErrEpoch:
		d.drop(replayed)
		return
	default: // ErrAuth, ErrSession, ErrNotRecord
		d.drop(forged)
		return
	}
	l.activity.Add(1)
	if n := d.newest.Load(); c+1 > n && d.newest.CompareAndSwap(n, c+1) {
		if cur := d.remote.Load(); cur == nil || *cur != from {
			to := from // allocated here only, not per record
			d.remote.Store(&to)
			if cur != nil && d.onRoam != nil {
				d.onRoam(from)
			}
		}
	}
	d.send.Store(true)
	if len(pkt) < minIPv4 || pkt[0]>>4 != 4 {
		l.countMalformed()
		return
	}
	l.packetsIn.Add(1)
	l.bytesIn.Add(uint64(len(pkt)))
	d.rxMu.Lock()
	d.one[0] = pkt
	l.recv.ReceivePackets(d.one[:])
	d.one[0] = nil
	d.rxMu.Unlock()
}
