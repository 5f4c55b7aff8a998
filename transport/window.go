package transport

import (
	"sync"

	"github.com/quic-go/quic-go"
)

// windowBudget caps the connection receive windows of one peer key's connections together.
// quic-go asks it (quic.Config.AllowConnectionWindowIncrease) before auto-tuning grows a
// connection's window past what it has; a connection starts with the initial window whatever
// the budget says, so a key's total is at most max(conns × initial, max).
//
// The window bounds what a peer has sent and this endpoint holds unconsumed: bytes on streams
// not read yet, and on streams refused (CancelRead) whose peer has not reset them yet. So
// the budget bounds the memory one key can pin however slowly the endpoint reads.
type windowBudget struct {
	initial, max uint64
	mu           sync.Mutex
	byKey        map[NodeID]*keyWindows
	byConn       map[*quic.Conn]*connWindow
}

// keyWindows is one key's share: its connections and the growth granted to them.
type keyWindows struct {
	conns int
	grown uint64
}

// connWindow is one connection's part of its key's share.
type connWindow struct {
	key   NodeID
	grown uint64
}

func newWindowBudget(initial, max uint64) *windowBudget {
	return &windowBudget{initial: initial, max: max, byKey: map[NodeID]*keyWindows{}, byConn: map[*quic.Conn]*connWindow{}}
}

// add counts qc, with its initial window, against key. Adding a connection twice is a no-op.
func (b *windowBudget) add(qc *quic.Conn, key NodeID) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if _, ok := b.byConn[qc]; ok {
		return
	}
	k := b.byKey[key]
	if k == nil {
		k = &keyWindows{}
		b.byKey[key] = k
	}
	k.conns++
	b.byConn[qc] = &connWindow{key: key}
}

// remove gives back what qc held: its initial window and its growth.
func (b *windowBudget) remove(qc *quic.Conn) {
	b.mu.Lock()
	defer b.mu.Unlock()
	c, ok := b.byConn[qc]
	if !ok {
		return
	}
	delete(b.byConn, qc)
	k := b.byKey[c.key]
	k.conns--
	k.grown -= c.grown
	if k.conns == 0 {
		delete(b.byKey, c.key)
	}
}

// allow grants qc delta more window if its key's total stays within the budget. A connection
// not added yet (still between handshake and Accept) grows nothing.
func (b *windowBudget) allow(qc *quic.Conn, delta uint64) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	c, ok := b.byConn[qc]
	if !ok {
		return false
	}
	k := b.byKey[c.key]
	if uint64(k.conns)*b.initial+k.grown+delta > b.max {
		return false
	}
	k.grown += delta
	c.grown += delta
	return true
}

// total is the receive window key's connections hold together.
func (b *windowBudget) total(key NodeID) uint64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	k := b.byKey[key]
	if k == nil {
		return 0
	}
	return uint64(k.conns)*b.initial + k.grown
}
