package consensus

import (
	"bytes"
	"context"
	"io"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

func closed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// TestChangedClosesOnApplyAndRestore: the channel waiters hold is closed by the next applied
// batch (once, with the state already updated) and by a restore, and not before; each change
// hands out a fresh channel.
func TestChangedClosesOnApplyAndRestore(t *testing.T) {
	cmds := scenario(t, 5, 2, 1)
	f := newFSM()
	ch := f.changed.wait()
	if f.changed.wait() != ch {
		t.Fatal("two waits before a change got different channels")
	}
	if closed(ch) {
		t.Fatal("closed before any change")
	}
	b, err := cmds[0].Marshal()
	if err != nil {
		t.Fatal(err)
	}
	f.ApplyBatch([]*raft.Log{{Index: 1, Type: raft.LogCommand, Data: b}})
	if !closed(ch) {
		t.Fatal("not closed after an applied batch")
	}
	next := f.changed.wait()
	if closed(next) {
		t.Fatal("the channel after a change is already closed")
	}
	// A waiter woken by the change sees it: the state was updated before the close.
	if f.applied != 1 {
		t.Fatalf("applied %d when the waiters were woken", f.applied)
	}
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	sink := &memSink{}
	if err := snap.Persist(sink); err != nil {
		t.Fatal(err)
	}
	g := newFSM()
	gch := g.changed.wait()
	if err := g.Restore(io.NopCloser(bytes.NewReader([]byte("short")))); err == nil {
		t.Fatal("corrupt snapshot restored")
	}
	if closed(gch) {
		t.Fatal("a refused restore woke the waiters")
	}
	if err := g.Restore(io.NopCloser(bytes.NewReader(sink.Bytes()))); err != nil {
		t.Fatal(err)
	}
	if !closed(gch) {
		t.Fatal("not closed after a restore")
	}
}

// TestNodeChanged: a waiter on Node.Changed is woken by a command applied through raft.
func TestNodeChanged(t *testing.T) {
	addr, tr := raft.NewInmemTransport("n1")
	n := newInmemNode(t, "n1", []Peer{{ID: "n1", Addr: string(addr)}}, tr)
	defer n.Shutdown()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, _, err := n.WaitLeader(ctx); err != nil {
		t.Fatal(err)
	}
	cmds := scenario(t, 7, 1, 1)
	ch := n.Changed()
	// scenario's first command is the coordinator's self-signed registration.
	if _, err := n.BootstrapCoordinator(ctx, cmds[0].Env); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ch:
	case <-ctx.Done():
		t.Fatal("Changed not closed after an applied command")
	}
	var coords int
	n.View(func(s *State) error { coords = len(s.Coordinators()); return nil })
	if coords != 1 {
		t.Fatalf("woken with %d coordinators in the state, want 1", coords)
	}
}
