package consensus

import (
	"encoding/binary"
	"fmt"
	"io"
	"runtime"
	"sync"
	"sync/atomic"

	"github.com/hashicorp/raft"
)

// applyResponse is what the FSM hands back through raft's ApplyFuture.
type applyResponse struct {
	res Result
	err error
}

// fsm adapts State to raft.BatchingFSM. It only decodes log entries, serialises access to the
// state, and moves snapshot bytes; all logic is in State.
type fsm struct {
	mu      sync.RWMutex
	state   *State
	applied uint64   // index of the last log entry applied
	changed notifier // told after every applied batch and restore (Node.Changed)

	// Since start: command log entries applied (Command and Batch entries), and the commands
	// they carried (the envelopes handed to State.Apply).
	entries, commands atomic.Uint64
}

var _ raft.BatchingFSM = (*fsm)(nil)

func newFSM() *fsm { return &fsm{state: NewState()} }

// Apply implements raft.FSM.
func (f *fsm) Apply(l *raft.Log) any { return f.ApplyBatch([]*raft.Log{l})[0] }

// ApplyBatch implements raft.BatchingFSM: entries are decoded outside the lock, then their
// commands applied in order under one lock. A Command entry answers an *applyResponse, a Batch
// entry a batchResponse (one per item, each as if its item had been an entry of its own), and an
// entry that does not decode an *applyResponse with the error.
func (f *fsm) ApplyBatch(logs []*raft.Log) []any {
	cmds := make([][]Command, len(logs))
	errs := make([]error, len(logs))
	total := 0
	for i, l := range logs {
		if l.Type == raft.LogCommand {
			cmds[i], errs[i] = DecodeEntry(l.Data)
			total += len(cmds[i])
		}
	}
	out := make([]any, len(logs))
	defer f.changed.notify() // deferred first, so it runs after the unlock
	f.mu.Lock()
	defer f.mu.Unlock()
	if total > 1 {
		ptrs := make([]*Command, 0, total)
		for i := range cmds {
			for j := range cmds[i] {
				ptrs = append(ptrs, &cmds[i][j])
			}
		}
		f.state.preverify(ptrs, runtime.GOMAXPROCS(0))
		defer f.state.clearPreverified()
	}
	for i, l := range logs {
		if l.Index > f.applied {
			f.applied = l.Index
		}
		if l.Type != raft.LogCommand {
			continue
		}
		f.entries.Add(1)
		f.commands.Add(uint64(len(cmds[i])))
		switch {
		case errs[i] != nil:
			out[i] = &applyResponse{err: errs[i]}
		case isBatch(l.Data):
			rs := make(batchResponse, len(cmds[i]))
			for j, c := range cmds[i] {
				rs[j].res, rs[j].err = f.state.Apply(c)
			}
			out[i] = rs
		default:
			res, err := f.state.Apply(cmds[i][0])
			out[i] = &applyResponse{res: res, err: err}
		}
	}
	return out
}

// Snapshot implements raft.FSM: the canonical bytes are the immutable copy.
func (f *fsm) Snapshot() (raft.FSMSnapshot, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	b, err := f.state.MarshalSnapshot()
	if err != nil {
		return nil, err
	}
	return &fsmSnapshot{applied: f.applied, state: b}, nil
}

// Restore implements raft.FSM; a corrupt snapshot leaves the state unchanged.
func (f *fsm) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	var hdr [8]byte
	if _, err := io.ReadFull(rc, hdr[:]); err != nil {
		return fmt.Errorf("%w: read index header: %w", ErrSnapshot, err)
	}
	s, err := ReadSnapshot(rc)
	if err != nil {
		return err
	}
	f.mu.Lock()
	f.state = s
	f.applied = binary.BigEndian.Uint64(hdr[:])
	f.mu.Unlock()
	f.changed.notify()
	return nil
}

// fsmSnapshot is what raft persists: the index of the last entry applied (8 bytes, big endian),
// then the state's canonical snapshot bytes (checksummed).
type fsmSnapshot struct {
	applied uint64
	state   []byte
}

// Persist implements raft.FSMSnapshot.
func (s *fsmSnapshot) Persist(sink raft.SnapshotSink) error {
	var hdr [8]byte
	binary.BigEndian.PutUint64(hdr[:], s.applied)
	if _, err := sink.Write(hdr[:]); err != nil {
		_ = sink.Cancel()
		return err
	}
	if _, err := sink.Write(s.state); err != nil {
		_ = sink.Cancel()
		return err
	}
	return sink.Close()
}

// Release implements raft.FSMSnapshot.
func (*fsmSnapshot) Release() {}
