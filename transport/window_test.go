package transport

import (
	"context"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
)

// TestWindowBudget: a key's connections start with the initial window each, whatever the
// budget, and grow only while their total stays within it; another key has its own; closing
// a connection gives back its initial window and its growth.
func TestWindowBudget(t *testing.T) {
	const initial, max = 100, 500
	a, b := NodeID{1}, NodeID{2}
	qa1, qa2, qb := new(quic.Conn), new(quic.Conn), new(quic.Conn)
	w := newWindowBudget(initial, max)
	steps := []struct {
		name   string
		do     func() bool // returns what allow said, or true
		want   bool
		totalA uint64
	}{
		{"unknown conn grows nothing", func() bool { return w.allow(qa1, 1) }, false, 0},
		{"add a1", func() bool { w.add(qa1, a); return true }, true, 100},
		{"add a1 again", func() bool { w.add(qa1, a); return true }, true, 100},
		{"a1 +200", func() bool { return w.allow(qa1, 200) }, true, 300},
		{"add a2", func() bool { w.add(qa2, a); return true }, true, 400},
		{"a2 +200 over budget", func() bool { return w.allow(qa2, 200) }, false, 400},
		{"a2 +100 to the budget", func() bool { return w.allow(qa2, 100) }, true, 500},
		{"add b", func() bool { w.add(qb, b); return true }, true, 500},
		{"b +400: its own budget", func() bool { return w.allow(qb, 400) }, true, 500},
		{"a1 +1 over budget", func() bool { return w.allow(qa1, 1) }, false, 500},
		{"remove a1", func() bool { w.remove(qa1); return true }, true, 200},
		{"remove a1 again", func() bool { w.remove(qa1); return true }, true, 200},
		{"a2 +300 after a1 went", func() bool { return w.allow(qa2, 300) }, true, 500},
		{"a1 closed grows nothing", func() bool { return w.allow(qa1, 1) }, false, 500},
		{"remove a2", func() bool { w.remove(qa2); return true }, true, 0},
	}
	for _, s := range steps {
		if got := s.do(); got != s.want {
			t.Fatalf("%s: allow = %v, want %v", s.name, got, s.want)
		}
		if got := w.total(a); got != s.totalA {
			t.Fatalf("%s: key a holds %d, want %d", s.name, got, s.totalA)
		}
	}
	if got := w.total(b); got != 500 {
		t.Fatalf("key b holds %d, want 500", got)
	}
	// Initial windows are granted past the budget: a connection is never refused for it.
	w2 := newWindowBudget(initial, 150)
	w2.add(qa1, a)
	w2.add(qa2, a)
	if w2.allow(qa1, 1) || w2.total(a) != 200 {
		t.Fatalf("two initial windows over a budget of 150: total %d, and nothing grows", w2.total(a))
	}
}

// TestMaxWindowPerKey: over a 20 ms round trip, a server reading 4 connections of one key as
// fast as they send auto-tunes their windows far past the initial ones, but only up to
// MaxWindowPerKey together; closing them gives the budget back.
func TestMaxWindowPerKey(t *testing.T) {
	const (
		initial = 128 << 10
		conns   = 4
		budget  = conns*initial + 512<<10 // 1 MiB
	)
	run := func(maxPerKey uint64) uint64 {
		spc, _ := shapedUDP(t, "0,10ms", 1)
		cpc, _ := shapedUDP(t, "0,10ms", 2)
		srv, err := Listen(spc, Config{Identity: testIdentity(t, 1), InitialConnWindow: initial, InitialStreamWindow: initial,
			MaxWindowPerKey: maxPerKey})
		if err != nil {
			t.Fatal(err)
		}
		defer srv.Close()
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		served := make(chan struct{})
		go func() {
			defer close(served)
			srv.Serve(ctx, Handler(func(context.Context, NodeID, Message) (Message, error) { return Message{}, nil }))
		}()
		cli, err := NewEndpoint(cpc, Config{Identity: testIdentity(t, 2)})
		if err != nil {
			t.Fatal(err)
		}
		defer cli.Close()
		var cs []*Conn
		for range conns {
			c, err := cli.Dial(testCtx(t, 10*time.Second), srv.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			cs = append(cs, c)
		}
		payload := make([]byte, 8<<20)
		errs := make(chan error, conns)
		for _, c := range cs {
			go func() {
				_, err := Call(testCtx(t, 60*time.Second), c, Message{Header: Header{Type: "bulk"}, Payload: payload})
				errs <- err
			}()
		}
		for range cs {
			if err := <-errs; err != nil {
				t.Fatal(err)
			}
		}
		key := testIdentity(t, 2).NodeID()
		total := srv.windows.total(key)
		for _, c := range cs {
			c.Close()
		}
		deadline := time.Now().Add(10 * time.Second)
		for srv.windows.total(key) != 0 {
			if time.Now().After(deadline) {
				t.Fatalf("key still holds %d of window after its connections closed", srv.windows.total(key))
			}
			time.Sleep(10 * time.Millisecond)
		}
		cancel()
		srv.Close()
		<-served
		return total
	}
	// Unbounded, auto-tuning takes the windows past the budget: the limit below is what stops them.
	free, bounded := run(1<<40), run(budget)
	t.Logf("windows of 4 connections: %d KiB unbounded, %d KiB with MaxWindowPerKey %d KiB", free>>10, bounded>>10, budget>>10)
	if free <= 2*budget {
		t.Fatalf("with no budget to speak of the 4 connections' windows grew to %d only, want > %d: no auto-tuning to bound", free, 2*budget)
	}
	if got := bounded; got > budget || got <= conns*initial {
		t.Fatalf("the 4 connections' windows total %d, want growth up to MaxWindowPerKey %d", got, budget)
	}
}
