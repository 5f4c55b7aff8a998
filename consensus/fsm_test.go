package consensus

import (
	"bytes"
	"errors"
	"io"
	"testing"

	"github.com/hashicorp/raft"
)

// TestApplyBatchMatchesSequential: the adapter's batched, parallel-preverified application gives
// the same results, errors and state as applying one command at a time, including forged
// signatures, garbage entries, non-command entries and keys registered earlier in the same batch.
func TestApplyBatchMatchesSequential(t *testing.T) {
	cmds := scenario(t, 21, 5, 3)
	var logs []*raft.Log
	var seq []Command
	for i, c := range cmds {
		b, err := c.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		logs = append(logs, &raft.Log{Index: uint64(len(logs) + 1), Type: raft.LogCommand, Data: b})
		seq = append(seq, c)
		if i%4 == 3 { // a forged copy under a fresh request ID
			f := c
			f.Env.RequestID += 1000
			f.Env.Sig = append([]byte{}, c.Env.Sig...)
			fb, _ := f.Marshal()
			logs = append(logs, &raft.Log{Index: uint64(len(logs) + 1), Type: raft.LogCommand, Data: fb})
			seq = append(seq, f)
		}
		if i%9 == 0 {
			logs = append(logs, &raft.Log{Index: uint64(len(logs) + 1), Type: raft.LogCommand, Data: []byte{0x93, 0xff}})
			seq = append(seq, Command{})
			logs = append(logs, &raft.Log{Index: uint64(len(logs) + 1), Type: raft.LogNoop})
		}
	}
	want := NewState()
	var wantRes []*applyResponse
	for i, c := range seq {
		if c.Version == 0 {
			_, err := DecodeCommand(logs[indexOfCommand(logs, i)].Data)
			wantRes = append(wantRes, &applyResponse{err: err})
			continue
		}
		res, err := want.Apply(c)
		wantRes = append(wantRes, &applyResponse{res: res, err: err})
	}

	f := newFSM()
	var got []*applyResponse
	for start := 0; start < len(logs); start += 17 {
		end := min(start+17, len(logs))
		for i, r := range f.ApplyBatch(logs[start:end]) {
			if logs[start+i].Type != raft.LogCommand {
				if r != nil {
					t.Fatalf("non-command entry got response %v", r)
				}
				continue
			}
			got = append(got, r.(*applyResponse))
		}
	}
	if len(got) != len(wantRes) {
		t.Fatalf("%d responses, want %d", len(got), len(wantRes))
	}
	forged := 0
	for i := range got {
		if got[i].res != wantRes[i].res || (got[i].err == nil) != (wantRes[i].err == nil) ||
			(got[i].err != nil && got[i].err.Error() != wantRes[i].err.Error()) {
			t.Fatalf("command %d: batch %+v / %v, sequential %+v / %v", i, got[i].res, got[i].err, wantRes[i].res, wantRes[i].err)
		}
		if errors.Is(got[i].err, ErrBadSignature) {
			forged++
		}
	}
	if forged == 0 {
		t.Fatal("no forged command was exercised")
	}
	if f.state.Hash() != want.Hash() {
		t.Fatal("batched state differs from sequential")
	}
	if f.applied != uint64(len(logs)) {
		t.Fatalf("applied index %d, want %d", f.applied, len(logs))
	}

	// Snapshot and restore through the adapter keep the state and the applied index.
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	sink := &memSink{}
	if err := snap.Persist(sink); err != nil {
		t.Fatal(err)
	}
	g := newFSM()
	if err := g.Restore(io.NopCloser(bytes.NewReader(sink.Bytes()))); err != nil {
		t.Fatal(err)
	}
	if g.state.Hash() != want.Hash() || g.applied != f.applied {
		t.Fatal("restore through the adapter lost state or index")
	}
	// A corrupt snapshot is refused and leaves the state alone.
	bad := append([]byte{}, sink.Bytes()...)
	bad[len(bad)/2] ^= 1
	if err := g.Restore(io.NopCloser(bytes.NewReader(bad))); !errors.Is(err, ErrSnapshot) {
		t.Fatalf("corrupt snapshot: err = %v", err)
	}
	if g.state.Hash() != want.Hash() {
		t.Fatal("failed restore changed the state")
	}
}

// indexOfCommand maps the i-th command response to its log position.
func indexOfCommand(logs []*raft.Log, i int) int {
	n := -1
	for j, l := range logs {
		if l.Type == raft.LogCommand {
			n++
			if n == i {
				return j
			}
		}
	}
	return -1
}

type memSink struct {
	bytes.Buffer
}

func (m *memSink) ID() string    { return "mem" }
func (m *memSink) Cancel() error { return nil }
func (m *memSink) Close() error  { return nil }
