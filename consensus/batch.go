package consensus

import (
	"bytes"
	"context"
	"fmt"
	"sync"

	"github.com/vmihailenco/msgpack/v5"
)

// Group commit: the leader gathers the envelopes that arrive while a log entry is in flight and
// appends them together as one batch entry, so the log grows by entries, not by commands, under
// load (a round's thousand receipts take a handful of entries). A batch entry holds each
// envelope with its own signature, request ID and leader time stamp; the state applies them in
// order exactly as if each had been its own entry, and each caller gets its own Result or error.

// BatchVersion is the batch entry format version this code writes and accepts.
const BatchVersion uint16 = 1

// batchTag is the first byte of a batch log entry. It is msgpack's never-used code, so no
// Command entry (a msgpack array) starts with it, and an entry's kind is told by one byte.
const batchTag = 0xc1

// MaxBatchBytes bounds one encoded batch entry. It is the bound a single Command entry already
// has (MaxCommandBytes), so a batch asks nothing of raft that one large command does not:
// hashicorp/raft's network transport, the TLS stream layer it runs on and raft-boltdb set no
// entry size of their own, and what bounds their memory is entry size × the entries raft holds at
// once (MaxAppendEntries per append RPC, 4096 in the log cache), which batches at the
// single-command bound leave where it was. Receipts, joins and votes are a few hundred bytes each,
// so 1 MiB holds thousands of them; MaxListLen (4096) bounds the count.
const MaxBatchBytes = MaxCommandBytes

// batchOverhead bounds the bytes of a batch entry beyond its items' own: the tag, the two array
// headers (1 and at most 5 bytes), the version (at most 3) and the leader's key ID (a string
// header of at most 5 bytes and the ID).
func batchOverhead(leader string) int { return 1 + 1 + 3 + 5 + len(leader) + 5 }

// BatchItem is one envelope of a batch entry with the leader's time stamp for it (unix ms), taken
// when the envelope reached the leader, as a Command entry's Time is.
type BatchItem struct {
	_msgpack struct{} `msgpack:",as_array"`
	Time     int64
	Env      Envelope
}

// Batch is a log entry of several commands: batchTag, then the msgpack array
// [Version, Leader, Items]. Leader is the coordinator key ID of the leader that appended it, the
// stamp every item's Command carries.
type Batch struct {
	_msgpack struct{} `msgpack:",as_array"`
	Version  uint16
	Leader   string
	Items    []BatchItem
}

// batchWire is Batch with its items already encoded (the leader encodes each item once, when it
// arrives, to know its size).
type batchWire struct {
	_msgpack struct{} `msgpack:",as_array"`
	Version  uint16
	Leader   string
	Items    []msgpack.RawMessage
}

// Commands returns the batch's items as the Commands they stand for, in order.
func (b *Batch) Commands() []Command {
	out := make([]Command, len(b.Items))
	for i, it := range b.Items {
		out[i] = Command{Version: Version, Time: it.Time, Env: it.Env, Leader: b.Leader}
	}
	return out
}

// Marshal encodes the batch as a log entry. It holds 1..MaxListLen items and at most
// MaxBatchBytes.
func (b *Batch) Marshal() ([]byte, error) {
	items := make([]msgpack.RawMessage, len(b.Items))
	for i := range b.Items {
		raw, err := msgpack.Marshal(&b.Items[i])
		if err != nil {
			return nil, fmt.Errorf("consensus: encode batch item %d: %w", i, err)
		}
		items[i] = raw
	}
	return marshalBatch(b.Leader, items)
}

func marshalBatch(leader string, items []msgpack.RawMessage) ([]byte, error) {
	if len(items) == 0 || len(items) > MaxListLen {
		return nil, errf(ErrInvalid, "batch of %d commands, want 1..%d", len(items), MaxListLen)
	}
	var buf bytes.Buffer
	buf.WriteByte(batchTag)
	if err := msgpack.NewEncoder(&buf).Encode(&batchWire{Version: BatchVersion, Leader: leader, Items: items}); err != nil {
		return nil, fmt.Errorf("consensus: encode batch: %w", err)
	}
	if buf.Len() > MaxBatchBytes {
		return nil, errf(ErrInvalid, "batch is %d bytes, limit %d", buf.Len(), MaxBatchBytes)
	}
	return buf.Bytes(), nil
}

// isBatch reports whether a log entry is a batch entry (else it is a Command entry).
func isBatch(b []byte) bool { return len(b) > 0 && b[0] == batchTag }

// DecodeBatch decodes a log entry written by Batch.Marshal and checks its version. Each item's
// envelope version is checked when the state applies it, so a bad item fails alone. It never
// panics; any malformed input yields an error wrapping ErrDecode or ErrVersion.
func DecodeBatch(b []byte) (Batch, error) {
	if len(b) > MaxBatchBytes {
		return Batch{}, errf(ErrDecode, "batch is %d bytes, limit %d", len(b), MaxBatchBytes)
	}
	if !isBatch(b) {
		return Batch{}, errf(ErrDecode, "not a batch entry")
	}
	var bt Batch
	if err := decodeExact(b[1:], &bt, MaxListLen); err != nil {
		return Batch{}, errf(ErrDecode, "batch entry: %v", err)
	}
	if bt.Version != BatchVersion {
		return Batch{}, errf(ErrVersion, "batch version %d", bt.Version)
	}
	if len(bt.Items) == 0 {
		return Batch{}, errf(ErrDecode, "empty batch")
	}
	return bt, nil
}

// DecodeEntry decodes a command log entry of either kind, a Command or a Batch, into the commands
// it holds, in order.
func DecodeEntry(b []byte) ([]Command, error) {
	if isBatch(b) {
		bt, err := DecodeBatch(b)
		if err != nil {
			return nil, err
		}
		return bt.Commands(), nil
	}
	c, err := DecodeCommand(b)
	if err != nil {
		return nil, err
	}
	return []Command{c}, nil
}

// batchResponse is the FSM's answer to a batch entry: one response per item, in order.
type batchResponse []applyResponse

// pending is one envelope waiting in the leader's queue.
type pending struct {
	ctx  context.Context
	cmd  Command            // stamped when it arrived
	item msgpack.RawMessage // cmd as a BatchItem
	done chan applyResponse // buffered: the committer never blocks on a caller that left
}

// committer is the leader's group commit: at most one entry of queued commands in flight; what
// arrives meanwhile waits and goes out together when it completes. The first command after a
// quiet spell goes out at once, alone, so group commit adds no latency at low load.
type committer struct {
	n     *Node
	mu    sync.Mutex
	queue []*pending
	busy  bool // a run goroutine is committing
}

// submit queues c and waits for its outcome or ctx.
func (cm *committer) submit(ctx context.Context, c Command) (Result, error) {
	item, err := msgpack.Marshal(&BatchItem{Time: c.Time, Env: c.Env})
	if err != nil {
		return Result{}, fmt.Errorf("consensus: encode command: %w", err)
	}
	if len(item)+batchOverhead(cm.n.cfg.KeyID) > MaxBatchBytes {
		// Too big to share an entry; its Command encoding decides whether it fits alone.
		if _, err := c.Marshal(); err != nil {
			return Result{}, err
		}
	}
	p := &pending{ctx: ctx, cmd: c, item: item, done: make(chan applyResponse, 1)}
	cm.mu.Lock()
	cm.queue = append(cm.queue, p)
	if !cm.busy {
		cm.busy = true
		go cm.run()
	}
	cm.mu.Unlock()
	select {
	case r := <-p.done:
		return r.res, r.err
	case <-ctx.Done():
		return Result{}, ctx.Err()
	}
}

// run commits the queue, one entry at a time, until it is empty.
func (cm *committer) run() {
	for {
		cm.mu.Lock()
		live := cm.queue[:0]
		for _, p := range cm.queue {
			if p.ctx.Err() == nil { // a caller that gave up before its entry went out is dropped
				live = append(live, p)
			}
		}
		clear(cm.queue[len(live):])
		cm.queue = live
		k := cutBatch(itemSizes(cm.queue), MaxListLen, MaxBatchBytes-batchOverhead(cm.n.cfg.KeyID))
		if k == 0 {
			cm.queue, cm.busy = nil, false
			cm.mu.Unlock()
			return
		}
		take := append([]*pending(nil), cm.queue[:k]...)
		clear(cm.queue[:k])
		cm.queue = cm.queue[k:]
		cm.mu.Unlock()
		cm.commit(take)
	}
}

func itemSizes(ps []*pending) []int {
	out := make([]int, len(ps))
	for i, p := range ps {
		out[i] = len(p.item)
	}
	return out
}

// cutBatch returns how many of the queued items (their encoded sizes, in order) the next entry
// takes: the first always (alone if it is too big to share), then as many as fit maxCount items
// and maxBytes of items. It returns 0 only for an empty queue.
func cutBatch(sizes []int, maxCount, maxBytes int) int {
	if len(sizes) == 0 {
		return 0
	}
	total := sizes[0]
	k := 1
	for k < len(sizes) && k < maxCount && total+sizes[k] <= maxBytes {
		total += sizes[k]
		k++
	}
	return k
}

// commit appends take as one entry (a Command when alone, else a Batch) and hands every caller
// its outcome.
func (cm *committer) commit(take []*pending) {
	n := cm.n
	fail := func(err error) {
		for _, p := range take {
			p.done <- applyResponse{err: err}
		}
	}
	var data []byte
	var err error
	if len(take) == 1 {
		data, err = take[0].cmd.Marshal()
	} else {
		items := make([]msgpack.RawMessage, len(take))
		for i, p := range take {
			items[i] = p.item
		}
		data, err = marshalBatch(n.cfg.KeyID, items)
	}
	if err != nil {
		fail(err)
		return
	}
	f := n.raft.Apply(data, n.cfg.ApplyTimeout)
	if err := f.Error(); err != nil {
		fail(n.mapErr(err))
		return
	}
	switch r := f.Response().(type) {
	case *applyResponse: // a single command, or a batch that did not decode: its error is everyone's
		if len(take) == 1 {
			take[0].done <- *r
		} else {
			fail(r.err)
		}
	case batchResponse:
		if len(r) != len(take) {
			fail(fmt.Errorf("consensus: batch of %d commands got %d results", len(take), len(r)))
			return
		}
		for i, p := range take {
			p.done <- r[i]
		}
	default:
		fail(fmt.Errorf("consensus: unexpected FSM response %T", f.Response()))
	}
}
