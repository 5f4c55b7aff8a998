package consensus

import (
	"crypto/sha256"
	"errors"
	"testing"
)

func TestDedupeWindowBound(t *testing.T) {
	s := NewState()
	mustApply(t, s, 1, "c1", 1, &AddCoordinatorBody{PublicKey: testPub("c1"), Name: "c1"})
	// Apply 2..DedupeWindow+10 in order; each funds the treasury with 1.
	last := uint64(DedupeWindow + 10)
	for req := uint64(2); req <= last; req++ {
		mustApply(t, s, 1, "c1", req, &FundBody{Amount: 1})
	}
	if got := len(s.dedupe[testID("c1")].Recent); got != DedupeWindow {
		t.Fatalf("window holds %d results, want %d", got, DedupeWindow)
	}
	before := s.Hash()
	// The oldest IDs fell out of the window: a retry is refused, not re-applied.
	_, err := s.Apply(Command{Version: Version, Time: 2, Env: mustEnv(t, "c1", 5, &FundBody{Amount: 1})})
	if !errors.Is(err, ErrStaleRequest) {
		t.Fatalf("retry of evicted request: err = %v, want ErrStaleRequest", err)
	}
	// A retry inside the window returns the cached result.
	res, err := s.Apply(Command{Version: Version, Time: 2, Env: mustEnv(t, "c1", last, &FundBody{Amount: 1})})
	if err != nil || !res.Duplicate || res.Amount != last-1 {
		t.Fatalf("retry of request %d: res %+v err %v, want duplicate of treasury balance %d", last, res, err, last-1)
	}
	if s.Hash() != before {
		t.Fatal("refused and duplicate requests changed the state")
	}
	if got := s.LastRequestID(testID("c1")); got != last {
		t.Fatalf("LastRequestID = %d, want %d", got, last)
	}
	if got := s.Treasury().Balance; got != last-1 {
		t.Fatalf("treasury %d, want %d", got, last-1)
	}
}

func TestClockMonotone(t *testing.T) {
	s := NewState()
	mustApply(t, s, 100, "c1", 1, &AddCoordinatorBody{PublicKey: testPub("c1"), Name: "c1"})
	mustApply(t, s, 50, "alice", 1, &RegisterBody{PublicKey: testPub("alice"), Name: "alice"})
	m, err := s.Member(testID("alice"))
	if err != nil {
		t.Fatal(err)
	}
	if m.RegisteredAt != 100 || s.Clock() != 100 {
		t.Fatalf("a stamp going back in time was used: registered at %d, clock %d", m.RegisteredAt, s.Clock())
	}
}

func TestApplyRejectsBadEnvelopes(t *testing.T) {
	s := NewState()
	env := mustEnv(t, "c1", 1, &AddCoordinatorBody{PublicKey: testPub("c1"), Name: "c1"})
	cases := []struct {
		name string
		mod  func(e *Envelope)
		want error
	}{
		{"version", func(e *Envelope) { e.Version = 9 }, ErrVersion},
		{"type", func(e *Envelope) { e.Type = 200 }, ErrDecode},
		{"body", func(e *Envelope) { e.Body = []byte{0xc1} }, ErrDecode},
		{"trailing", func(e *Envelope) { e.Body = append(append([]byte{}, e.Body...), 0) }, ErrDecode},
		{"short sig", func(e *Envelope) { e.Sig = e.Sig[:10] }, ErrBadSignature},
		{"issuer swapped", func(e *Envelope) { e.Issuer = testID("c2") }, ErrBadSignature},
		{"request id changed", func(e *Envelope) { e.RequestID++ }, ErrBadSignature},
		{"unsigned", func(e *Envelope) { e.Sig = nil }, ErrUnsigned},
		{"request id 0", func(e *Envelope) { e.RequestID = 0 }, ErrInvalid},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := env
			e.Sig = append([]byte{}, env.Sig...)
			tc.mod(&e)
			_, err := s.Apply(Command{Version: Version, Env: e})
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
		})
	}
	if len(s.Coordinators()) != 0 {
		t.Fatal("a rejected command changed the state")
	}
}

func TestVerifyIsReadOnly(t *testing.T) {
	s := NewState()
	mustApply(t, s, 1, "c1", 1, &AddCoordinatorBody{PublicKey: testPub("c1"), Name: "c1"})
	mustApply(t, s, 1, "alice", 1, &RegisterBody{PublicKey: testPub("alice"), Name: "alice"})
	before := s.Hash()
	good := mustEnv(t, "alice", 2, &VoteBody{Proposal: 1, Yes: true})
	if err := s.Verify(good); err != nil {
		t.Fatalf("valid envelope: %v", err)
	}
	forged := good
	forged.Sig = append([]byte{}, good.Sig...)
	forged.Sig[5] ^= 1
	if err := s.Verify(forged); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("forged: %v", err)
	}
	if err := s.Verify(mustEnv(t, "bob", 1, &VoteBody{Proposal: 1})); !errors.Is(err, ErrUnknownIssuer) {
		t.Fatalf("unknown issuer: %v", err)
	}
	if err := s.Verify(mustEnv(t, "alice", 3, &TallyBody{Proposal: 1})); !errors.Is(err, ErrForbidden) {
		t.Fatalf("member issuing tally: %v", err)
	}
	if s.Hash() != before {
		t.Fatal("Verify changed the state")
	}
}

func TestSignerConcurrentUniqueIDs(t *testing.T) {
	sg, err := NewSigner(testKey("c1"), 41)
	if err != nil {
		t.Fatal(err)
	}
	if sg.ID() != testID("c1") {
		t.Fatalf("ID %s, want %s", sg.ID(), testID("c1"))
	}
	ids := make(chan uint64, 200)
	done := make(chan struct{})
	for g := 0; g < 4; g++ {
		go func() {
			defer func() { done <- struct{}{} }()
			for i := 0; i < 50; i++ {
				env, err := sg.Sign(&TallyBody{Proposal: 1})
				if err != nil {
					t.Error(err)
					return
				}
				if err := env.Verify(sg.PublicKey()); err != nil {
					t.Error(err)
				}
				ids <- env.RequestID
			}
		}()
	}
	for g := 0; g < 4; g++ {
		<-done
	}
	close(ids)
	seen := map[uint64]bool{}
	for id := range ids {
		if seen[id] || id <= 41 || id > 241 {
			t.Fatalf("request ID %d repeated or out of range", id)
		}
		seen[id] = true
	}
	if _, err := NewSigner([]byte("short"), 0); !errors.Is(err, ErrInvalid) {
		t.Fatalf("short key: %v", err)
	}
}

// Hash is computed once per state change: asking again costs nothing, and every Apply that
// changes the state (and only those) gives the hash of the new snapshot bytes.
func TestHashCachedBetweenChanges(t *testing.T) {
	s := applyAll(t, scenario(t, 4, 3, 1))
	fresh := func() [32]byte {
		b, err := s.MarshalSnapshot()
		if err != nil {
			t.Fatal(err)
		}
		return sha256.Sum256(b)
	}
	h := s.Hash()
	if h != fresh() {
		t.Fatal("Hash differs from the snapshot's hash")
	}
	if n := testing.AllocsPerRun(20, func() { s.Hash() }); n != 0 {
		t.Fatalf("a repeated Hash allocates %v times: it is recomputed", n)
	}
	mustApply(t, s, 1, "c1", 1000, &FundBody{Amount: 1})
	if s.Hash() == h || s.Hash() != fresh() {
		t.Fatal("Hash after a change is stale")
	}
	h = s.Hash()
	if _, err := s.Apply(Command{Version: Version, Time: 1, Env: mustEnv(t, "c1", 1001, &FundBody{})}); err == nil {
		t.Fatal("fund of 0 accepted")
	}
	if s.Hash() != h || fresh() != h {
		t.Fatal("a refused command changed the hash")
	}
	r, err := UnmarshalSnapshot(mustSnapshot(t, s))
	if err != nil {
		t.Fatal(err)
	}
	if r.Hash() != h {
		t.Fatal("restored state has another hash")
	}
}

func mustSnapshot(t *testing.T, s *State) []byte {
	t.Helper()
	b, err := s.MarshalSnapshot()
	if err != nil {
		t.Fatal(err)
	}
	return b
}
