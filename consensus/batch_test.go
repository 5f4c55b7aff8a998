package consensus

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// TestGroupCommitTCP: 1,000 concurrent Applies on 3 nodes over TCP with on-disk stores commit in
// far fewer log entries than commands; every caller gets its own result (forged envelopes among
// them their own error), the replicas agree, and replaying a node's log gives its state.
func TestGroupCommitTCP(t *testing.T) {
	c, _ := startTCPCluster(t, nil) // the Node's default timeouts: the test's 1,000 callers load the machine
	// An entry of a thousand registrations takes seconds to verify under the race detector: a
	// client that gave up after 2s would resend it, and its retry would be applied (as a
	// duplicate) in the next entry.
	c.attempt = time.Minute
	var once sync.Once
	stop := func() {
		once.Do(func() {
			for _, n := range c.live() {
				_ = n.Shutdown()
			}
		})
	}
	defer stop()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if _, err := c.bootstrap(ctx, mustEnv(t, "c1", 1, &AddCoordinatorBody{PublicKey: testPub("c1"), Name: "c1"})); err != nil {
		t.Fatal(err)
	}

	// Every node applies every entry, so any node's counts tell what the log holds; a client
	// retries on another leader (c.apply), so a leader change only adds entries.
	l := c.live()[0]
	// At low load every command goes out at once, alone: one entry each.
	e0, n0 := l.ApplyCounts()
	for i := 0; i < 5; i++ {
		name := fmt.Sprintf("seq%d", i)
		if _, err := c.apply(ctx, mustEnv(t, name, 1, &RegisterBody{PublicKey: testPub(name), Name: name})); err != nil {
			t.Fatal(err)
		}
	}
	c.waitConverged(t, 30*time.Second)
	if e1, n1 := l.ApplyCounts(); e1-e0 != n1-n0 || n1-n0 < 5 {
		t.Fatalf("5 sequential applies took %d entries for %d commands, want one entry each", e1-e0, n1-n0)
	}

	const callers, forgeEvery = 1000, 97
	e0, n0 = l.ApplyCounts()
	var wg sync.WaitGroup
	errs := make([]error, callers)
	for i := 0; i < callers; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			name := fmt.Sprintf("g%d", i)
			env := mustEnv(t, name, 1, &RegisterBody{PublicKey: testPub(name), Name: name})
			if i%forgeEvery == forgeEvery/2 {
				env.Sig[0] ^= 1
			}
			res, err := c.apply(ctx, env)
			switch {
			case i%forgeEvery == forgeEvery/2:
				if !errors.Is(err, ErrBadSignature) {
					errs[i] = fmt.Errorf("forged %s: err = %v, want ErrBadSignature", name, err)
				}
			case err != nil:
				errs[i] = fmt.Errorf("%s: %w", name, err)
			case res.Type != CmdRegister || res.Member != testID(name): // Duplicate after a retry
				errs[i] = fmt.Errorf("%s: result %+v, want its own registration", name, res)
			}
		}(i)
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	hashes := c.waitConverged(t, 30*time.Second)
	sameHashes(t, hashes)
	e1, n1 := l.ApplyCounts()
	entries, cmds := e1-e0, n1-n0
	t.Logf("%d concurrent applies: %d commands in %d raft log entries (%.1f commands per entry)",
		callers, cmds, entries, float64(cmds)/float64(entries))
	if cmds < callers {
		t.Fatalf("%d commands applied, want at least %d", cmds, callers)
	}
	if entries > callers/8 {
		t.Fatalf("%d log entries for %d commands, want at most %d", entries, callers, callers/8)
	}
	if st := l.Stats(); st["command_entries"] != fmt.Sprint(e1) || st["commands_applied"] != fmt.Sprint(n1) {
		t.Fatalf("Stats: command_entries=%s commands_applied=%s, want %d and %d",
			st["command_entries"], st["commands_applied"], e1, n1)
	}
	for _, n := range c.live() {
		if e, k := n.ApplyCounts(); e != e1 || k != n1 {
			t.Fatalf("%s applied %d entries with %d commands, %s %d with %d", n.ID(), e, k, l.ID(), e1, n1)
		}
	}
	var members int
	_ = c.waitLeader(t, 10*time.Second).View(func(s *State) error { members = len(s.Members()); return nil })
	if want := 5 + callers - (callers+forgeEvery/2)/forgeEvery; members != want {
		t.Fatalf("%d members, want %d", members, want)
	}

	// The log alone gives the state: replay a stopped node's directory.
	var want [32]byte
	for _, h := range hashes {
		want = h
	}
	dirs := map[string]string{}
	for _, n := range c.live() {
		dirs[n.ID()] = n.cfg.Dir
	}
	stop()
	for id, dir := range dirs {
		st, _, err := ReplayDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		if st.Hash() != want {
			t.Fatalf("replay of %s (%s) differs from the live state", id, filepath.Base(dir))
		}
	}
}

// TestApplyBatchEntry: a batch entry applies its items in order exactly as separate entries
// would: a forged, an unsigned, a wrong-version and an undecodable envelope in the middle each get
// their own error, the others apply, a repeated request gets its cached result, and the state is
// the sequential one.
func TestApplyBatchEntry(t *testing.T) {
	reg := func(name string) Envelope {
		return mustEnv(t, name, 1, &RegisterBody{PublicKey: testPub(name), Name: name})
	}
	forged := reg("mallory")
	forged.Sig[5] ^= 1
	unsigned := reg("nobody")
	unsigned.Sig = nil
	oldVersion := reg("old")
	oldVersion.Version = Version - 1
	garbage := reg("garbage")
	garbage.Body = []byte{0x93, 0xff}
	items := []BatchItem{
		{Time: 1000, Env: mustEnv(t, "c1", 1, &AddCoordinatorBody{PublicKey: testPub("c1"), Name: "c1"})},
		{Time: 1001, Env: reg("alice")},
		{Time: 1002, Env: forged},
		{Time: 1001, Env: reg("bob")}, // stamps need not be monotone: the state makes them so
		{Time: 1003, Env: unsigned},
		{Time: 1004, Env: oldVersion},
		{Time: 1005, Env: garbage},
		{Time: 1006, Env: reg("alice")}, // a retry in the same entry
		{Time: 1007, Env: reg("carol")},
	}
	leader := testID("c1")
	want := NewState()
	var wantRes []applyResponse
	for _, it := range items {
		res, err := want.Apply(Command{Version: Version, Time: it.Time, Env: it.Env, Leader: leader})
		wantRes = append(wantRes, applyResponse{res, err})
	}

	b, err := (&Batch{Leader: leader, Items: items}).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	f := newFSM()
	out := f.ApplyBatch([]*raft.Log{{Index: 1, Type: raft.LogCommand, Data: b}})
	got, ok := out[0].(batchResponse)
	if !ok || len(got) != len(items) {
		t.Fatalf("response %T of %d, want batchResponse of %d", out[0], len(got), len(items))
	}
	for i := range got {
		g, w := got[i], wantRes[i]
		if g.res != w.res || (g.err == nil) != (w.err == nil) || (g.err != nil && g.err.Error() != w.err.Error()) {
			t.Errorf("item %d: batch %+v / %v, sequential %+v / %v", i, g.res, g.err, w.res, w.err)
		}
	}
	for i, sentinel := range map[int]error{2: ErrBadSignature, 4: ErrUnsigned, 5: ErrVersion, 6: ErrDecode} {
		if !errors.Is(got[i].err, sentinel) {
			t.Errorf("item %d: err = %v, want %v", i, got[i].err, sentinel)
		}
	}
	if !got[7].res.Duplicate || got[7].res.Member != testID("alice") {
		t.Errorf("retry in the same entry: %+v, want alice's cached registration", got[7].res)
	}
	if f.state.Hash() != want.Hash() {
		t.Fatal("state after the batch entry differs from applying its commands one by one")
	}
	if e, n := f.entries.Load(), f.commands.Load(); e != 1 || n != uint64(len(items)) {
		t.Fatalf("counted %d entries, %d commands; want 1, %d", e, n, len(items))
	}

	// The same commands as one Command entry each, in one raft batch with the batch entry's
	// neighbours: a corrupt batch entry fails alone and as a whole.
	g := newFSM()
	var logs []*raft.Log
	for i, it := range items {
		c := Command{Time: it.Time, Env: it.Env, Leader: leader}
		cb, err := c.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		logs = append(logs, &raft.Log{Index: uint64(i + 1), Type: raft.LogCommand, Data: cb})
	}
	corrupt := append([]byte{}, b[:len(b)-1]...)
	logs = append(logs, &raft.Log{Index: uint64(len(logs) + 1), Type: raft.LogCommand, Data: corrupt})
	out = g.ApplyBatch(logs)
	if r, ok := out[len(out)-1].(*applyResponse); !ok || !errors.Is(r.err, ErrDecode) {
		t.Fatalf("corrupt batch entry: %v, want an ErrDecode response", out[len(out)-1])
	}
	if g.state.Hash() != want.Hash() {
		t.Fatal("one entry per command gives another state than the batch entry")
	}
}

func TestCutBatch(t *testing.T) {
	for _, tc := range []struct {
		name            string
		sizes           []int
		count, maxBytes int
		want            int
	}{
		{"empty", nil, 10, 100, 0},
		{"one", []int{5}, 10, 100, 1},
		{"all fit", []int{10, 10, 10}, 10, 100, 3},
		{"count bound", []int{1, 1, 1, 1, 1}, 3, 100, 3},
		{"byte bound", []int{40, 40, 40}, 10, 100, 2},
		{"exactly full", []int{50, 50, 1}, 10, 100, 2},
		{"first too big goes alone", []int{500, 1}, 10, 100, 1},
		{"big one waits for the next", []int{10, 95, 1}, 10, 100, 1},
		{"count one", []int{1, 1}, 1, 100, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := cutBatch(tc.sizes, tc.count, tc.maxBytes); got != tc.want {
				t.Fatalf("cutBatch(%v, %d, %d) = %d, want %d", tc.sizes, tc.count, tc.maxBytes, got, tc.want)
			}
		})
	}
}

func TestDecodeBatch(t *testing.T) {
	items := []BatchItem{{Time: 7, Env: mustEnv(t, "a", 1, &VoteBody{Proposal: 1, Yes: true})},
		{Time: 8, Env: mustEnv(t, "b", 3, &VoteBody{Proposal: 1})}}
	good, err := (&Batch{Leader: "L", Items: items}).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	cmds, err := DecodeEntry(good)
	if err != nil || len(cmds) != 2 || cmds[1].Time != 8 || cmds[1].Leader != "L" || cmds[1].Version != Version ||
		!bytes.Equal(cmds[1].Env.Sig, items[1].Env.Sig) {
		t.Fatalf("round trip: %+v, %v", cmds, err)
	}
	single, err := (&Command{Time: 9, Env: items[0].Env}).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if cmds, err := DecodeEntry(single); err != nil || len(cmds) != 1 || cmds[0].Time != 9 {
		t.Fatalf("command entry: %+v, %v", cmds, err)
	}
	wrongVersion := append([]byte{}, good...)
	wrongVersion[4] = 9 // [tag, array header, uint16 version (0xcd, 2 bytes), ...]
	tooMany := make([]BatchItem, MaxListLen+1)
	if _, err := (&Batch{Items: tooMany}).Marshal(); !errors.Is(err, ErrInvalid) {
		t.Fatalf("Marshal of %d items: %v, want ErrInvalid", len(tooMany), err)
	}
	if _, err := (&Batch{}).Marshal(); !errors.Is(err, ErrInvalid) {
		t.Fatalf("Marshal of no items: %v, want ErrInvalid", err)
	}
	for _, tc := range []struct {
		name string
		b    []byte
		want error
	}{
		{"nil", nil, ErrDecode},
		{"tag only", []byte{batchTag}, ErrDecode},
		{"command entry", single, ErrDecode},
		{"truncated", good[:len(good)-3], ErrDecode},
		{"trailing byte", append(append([]byte{}, good...), 0), ErrDecode},
		{"wrong version", wrongVersion, ErrVersion},
		{"no items", []byte{batchTag, 0x93, 0x01, 0xa0, 0x90}, ErrDecode},
		{"declares 2^32 items", []byte{batchTag, 0x93, 0x01, 0xa0, 0xdd, 0xff, 0xff, 0xff, 0xff}, ErrDecode},
		{"too big", append([]byte{batchTag}, make([]byte, MaxBatchBytes)...), ErrDecode},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := DecodeBatch(tc.b); !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
		})
	}
}

// TestGroupCommitDropsCancelled: a caller that gave up before its command went out gets its
// context's error and its command is not appended; the next caller's is.
func TestGroupCommitDropsCancelled(t *testing.T) {
	_, trans := raft.NewInmemTransport("")
	n := newInmemNode(t, "n1", []Peer{{ID: "n1", Addr: string(trans.LocalAddr())}}, trans)
	defer n.Shutdown()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := &cluster{nodes: map[string]*Node{"n1": n}}
	c.waitLeader(t, 10*time.Second)
	e0, n0 := n.ApplyCounts()
	gone, giveUp := context.WithCancel(ctx)
	giveUp()
	late := mustEnv(t, "late", 1, &RegisterBody{PublicKey: testPub("late"), Name: "late"})
	if _, err := n.Apply(gone, late); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled caller: err = %v, want context.Canceled", err)
	}
	next := mustEnv(t, "next", 1, &RegisterBody{PublicKey: testPub("next"), Name: "next"})
	if res, err := n.Apply(ctx, next); err != nil || res.Member != testID("next") {
		t.Fatalf("next caller: %+v, %v", res, err)
	}
	if e, k := n.ApplyCounts(); e-e0 != 1 || k-n0 != 1 {
		t.Fatalf("%d entries with %d commands after one cancelled and one applied, want 1 and 1", e-e0, k-n0)
	}
	_ = n.View(func(s *State) error {
		if _, err := s.Member(testID("late")); !errors.Is(err, ErrNotFound) {
			t.Errorf("the cancelled registration was applied (%v)", err)
		}
		return nil
	})
}
