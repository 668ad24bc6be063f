package dtls

import (
	"encoding/binary"
	"fmt"
	"io"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dstmgw/dstm/tunnel/record"
	"github.com/dstmgw/dstm/tunnel/udpmux"
	piondtls "github.com/pion/dtls/v3"
	"golang.org/x/sys/cpu"
)

// Data records (tunnel/record) take over the packets of a link once both sides agree, in two
// DTLS application records after the bind: the server's offer and the client's accept, each
//
//	"DSTM" kind('O' or 'A') version(1 or 2) suite(1) session-id(4)
//
// Neither is a token or an IPv4 packet, so a client or server without data records counts
// it as malformed and goes on with DTLS records (docs/protocol.md). The server offers version
// 2 and then version 1; a client answers the highest it speaks, with that version. Version 2
// adds the close record (an authenticated data record with nothing in it: the sender has
// ended the session), which lets the server drop its DTLS state once the accept came.
const (
	negLen    = 11
	negOffer  = 'O'
	negAccept = 'A'
	// dataV1 is data records alone; dataV2 adds the close record, and the server's DTLS
	// state ends with the accept.
	dataV1 = 1
	dataV2 = 2

	// offerEvery and maxOffers bound the offers a server resends while the client keeps
	// sending DTLS records (the offer was lost, or the client has no data records).
	offerEvery = time.Second
	maxOffers  = 5
)

type negotiation struct {
	kind    byte
	version byte
	suite   record.Suite
	session uint32
}

func (n negotiation) marshal() []byte {
	b := make([]byte, negLen)
	copy(b, "DSTM")
	b[4], b[5], b[6] = n.kind, n.version, byte(n.suite)
	binary.BigEndian.PutUint32(b[7:], n.session)
	return b
}

// parseNegotiation recognizes an offer or an accept of a version this side speaks.
func parseNegotiation(b []byte) (negotiation, bool) {
	if len(b) != negLen || string(b[:4]) != "DSTM" || (b[4] != negOffer && b[4] != negAccept) ||
		(b[5] != dataV1 && b[5] != dataV2) || !record.Suite(b[6]).Valid() {
		return negotiation{}, false
	}
	return negotiation{kind: b[4], version: b[5], suite: record.Suite(b[6]), session: binary.BigEndian.Uint32(b[7:])}, true
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
	send, recv := sec.Directions(server)
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
	path   atomic.Pointer[dataPath]       // set once negotiated
	send   atomic.Bool                    // packets go out as data records
	v2     atomic.Bool                    // version 2 agreed: sessions end by close records
	remote atomic.Pointer[netip.AddrPort] // written under roamMu
	roamMu sync.Mutex
	newest uint64 // highest counter received + 1; under roamMu
	// writeBatch sends datagrams to the peer outside pion (the server's port or the client's
	// socket).
	writeBatch func(bufs [][]byte, to netip.AddrPort) error
	batches    *sync.Pool // *sealBatch, the server's or the client link's own

	rxMu sync.Mutex // serializes deliveries of received data records (two sockets may read)
	one  [1][]byte
	// pending holds opened packets (in the reader's buffers) until the batch ends; markDirty
	// lists the link with the server when pending becomes non-empty.
	pending   [][]byte
	markDirty func(*link)

	offers    atomic.Int32
	lastOffer atomic.Int64 // unix nanoseconds of the last offer sent

	drops dataDrops
	total *dataDrops // the server's, nil on a client
	// onRoam runs when a data record from a new address is the newest; nil on a client.
	onRoam func(to netip.AddrPort)
}

// Reasons a data record is dropped, indexes of dataDrops.
const (
	dropForged = iota
	dropReplayed
	dropShort
	numDrops
)

// dataDrops counts data records dropped, by reason.
type dataDrops [numDrops]atomic.Uint64

// drop counts a dropped record on the link and, on a server, in all.
func (d *dataState) drop(reason int) {
	d.drops[reason].Add(1)
	if d.total != nil {
		d.total[reason].Add(1)
	}
}

// sealBatch holds the data records of one write system call, back to back in slab so that
// records of one size go out as one UDP GSO send (udpmux.BatchWriter).
type sealBatch struct {
	slab []byte   // room for udpmux.MaxWriteBatch records of 2 KB
	bufs [][]byte // the records, in slab (a longer one in a buffer of its own)
}

func getSealBatch(p *sync.Pool) *sealBatch {
	if sb, ok := p.Get().(*sealBatch); ok {
		return sb
	}
	return &sealBatch{slab: make([]byte, udpmux.MaxWriteBatch*2048), bufs: make([][]byte, 0, udpmux.MaxWriteBatch)}
}

// writeData seals the packets into data records and sends them, a batch per system call.
func (l *link) writeData(dp *dataPath, pkts [][]byte) error {
	d := &l.data
	to := *d.remote.Load()
	sb := getSealBatch(d.batches)
	defer func() {
		clear(sb.bufs)
		sb.bufs = sb.bufs[:0]
		d.batches.Put(sb)
	}()
	for len(pkts) > 0 {
		n := min(len(pkts), udpmux.MaxWriteBatch)
		sb.bufs = sb.bufs[:0]
		size, off := 0, 0
		for _, p := range pkts[:n] {
			if len(p) == 0 {
				continue
			}
			inSlab := len(p)+record.Overhead <= len(sb.slab)-off
			var dst []byte
			if inSlab {
				dst = sb.slab[off:off] // Seal appends within the slab's room
			} else {
				dst = make([]byte, 0, len(p)+record.Overhead)
			}
			b, err := dp.sealer.Seal(dst, p)
			if err != nil {
				return fmt.Errorf("dtls: data record: %w", err)
			}
			if inSlab {
				off += len(b)
			}
			sb.bufs = append(sb.bufs, b)
			size += len(p)
		}
		pkts = pkts[n:]
		if len(sb.bufs) == 0 {
			continue
		}
		if err := d.writeBatch(sb.bufs, to); err != nil {
			return fmt.Errorf("dtls: write data records: %w", err)
		}
		l.packetsOut.Add(uint64(len(sb.bufs)))
		l.bytesOut.Add(uint64(size))
	}
	return nil
}

// receiveData opens a data record received from from, in place, and delivers its packet, at
// once or, inBatch, when the batch ends (flushPending). A record that opens moves the link's
// data records to from when it is the newest so far (roaming), and proves that the peer
// speaks data records.
func (l *link) receiveData(b []byte, from netip.AddrPort, inBatch bool) {
	d := &l.data
	dp := d.path.Load()
	if dp == nil {
		d.drop(dropForged) // nothing negotiated: no record can be ours
		return
	}
	pkt, c, err := dp.opener.Open(b)
	switch err {
	case nil:
	case record.ErrShort:
		d.drop(dropShort)
		return
	case record.ErrReplay, record.ErrEpoch:
		d.drop(dropReplayed)
		return
	default: // ErrAuth, ErrSession, ErrNotRecord
		d.drop(dropForged)
		return
	}
	l.activity.Add(1)
	if len(pkt) == 0 { // a close record: the peer ended the session
		l.peerClosed()
		return
	}
	d.roamMu.Lock()
	if c+1 > d.newest {
		d.newest = c + 1
		if cur := d.remote.Load(); cur == nil || *cur != from {
			to := from // allocated here only, not per record
			d.remote.Store(&to)
			if cur != nil && d.onRoam != nil {
				d.onRoam(from)
			}
		}
	}
	d.roamMu.Unlock()
	d.send.Store(true)
	if len(pkt) < minIPv4 || pkt[0]>>4 != 4 {
		l.countMalformed()
		return
	}
	l.packetsIn.Add(1)
	l.bytesIn.Add(uint64(len(pkt)))
	d.rxMu.Lock()
	defer d.rxMu.Unlock()
	if !inBatch || d.markDirty == nil {
		d.one[0] = pkt
		l.recv.ReceivePackets(d.one[:])
		d.one[0] = nil
		return
	}
	if d.pending == nil {
		d.pending = make([][]byte, 0, maxPending)
	}
	d.pending = append(d.pending, pkt)
	switch len(d.pending) {
	case 1:
		d.markDirty(l)
	case maxPending:
		l.deliverPendingLocked()
	}
}

// maxPending bounds the packets a link holds for the end of a batch.
const maxPending = 64

// flushPending delivers the packets waiting for the end of the batch.
func (l *link) flushPending() {
	l.data.rxMu.Lock()
	defer l.data.rxMu.Unlock()
	l.deliverPendingLocked()
}

func (l *link) deliverPendingLocked() {
	d := &l.data
	if len(d.pending) == 0 {
		return
	}
	l.recv.ReceivePackets(d.pending)
	clear(d.pending)
	d.pending = d.pending[:0]
}

// sendClose tells the peer, once version 2 is agreed, that this side ended the session: one
// close record, not repeated (a peer that misses it finds out by its keepalives or idle
// timeout, as with a lost close_notify).
func (l *link) sendClose() {
	d := &l.data
	dp := d.path.Load()
	if dp == nil || !d.v2.Load() || !d.send.Load() {
		return
	}
	var to netip.AddrPort // a client's writeBatch knows its server
	if r := d.remote.Load(); r != nil {
		to = *r
	}
	rec, err := dp.sealer.Seal(make([]byte, 0, record.Overhead), nil)
	if err != nil {
		return
	}
	_ = d.writeBatch([][]byte{rec}, to)
}

// peerClosed ends the link on the peer's close record, as a close_notify does. Closing a pion
// Conn waits for its goroutines, so a link that still has one ends on a goroutine of its own,
// not on the UDP reader's.
func (l *link) peerClosed() {
	if l.conn.Load() == nil {
		l.finish(io.EOF)
		return
	}
	go l.finish(io.EOF)
}
