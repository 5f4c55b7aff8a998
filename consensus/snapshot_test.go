package consensus

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"math"
	"os"
	"strings"
	"testing"

	"github.com/vmihailenco/msgpack/v5"
)

var updateGolden = flag.Bool("update", false, "rewrite testdata golden files")

func TestSnapshotRoundTrip(t *testing.T) {
	cmds := scenario(t, 1, 5, 4)
	s := applyAll(t, cmds)
	b, err := s.MarshalSnapshot()
	if err != nil {
		t.Fatal(err)
	}
	r, err := UnmarshalSnapshot(b)
	if err != nil {
		t.Fatal(err)
	}
	if s.Hash() != r.Hash() {
		t.Fatal("restored state has a different hash")
	}
	b2, _ := r.MarshalSnapshot()
	if !bytes.Equal(b, b2) {
		t.Fatal("restored state re-encodes to different bytes")
	}
	// Replicas agree: the same commands give the same hash, and a state restored half way and
	// fed the rest catches up to the same hash.
	if applyAll(t, cmds).Hash() != s.Hash() {
		t.Fatal("same commands, different hash")
	}
	half := applyAll(t, cmds[:len(cmds)/2])
	hb, _ := half.MarshalSnapshot()
	restored, err := ReadSnapshot(bytes.NewReader(hb))
	if err != nil {
		t.Fatal(err)
	}
	for i, c := range cmds[len(cmds)/2:] {
		if _, err := restored.Apply(c); err != nil {
			t.Fatalf("command %d after restore: %v", i, err)
		}
	}
	if restored.Hash() != s.Hash() {
		t.Fatal("restore + replay of the rest differs from a full replay")
	}
	// Replaying every command again is a no-op (all duplicates).
	before := s.Hash()
	for _, c := range cmds {
		res, err := s.Apply(c)
		if err != nil || !res.Duplicate {
			t.Fatalf("replay: %+v, %v", res, err)
		}
	}
	if s.Hash() != before {
		t.Fatal("replaying applied commands changed the state")
	}
}

func TestSnapshotRejectsCorruption(t *testing.T) {
	s := applyAll(t, scenario(t, 2, 3, 2))
	b, err := s.MarshalSnapshot()
	if err != nil {
		t.Fatal(err)
	}
	for n := 0; n < len(b); n += 1 + n/8 {
		if _, err := UnmarshalSnapshot(b[:n]); !errors.Is(err, ErrSnapshot) {
			t.Fatalf("truncated to %d of %d bytes: err = %v, want ErrSnapshot", n, len(b), err)
		}
	}
	for _, pos := range []int{0, 3, len(snapshotMagic), len(b) / 2, len(b) - 40, len(b) - 1} {
		c := append([]byte{}, b...)
		c[pos] ^= 0x40
		if _, err := UnmarshalSnapshot(c); err == nil {
			t.Fatalf("flipped byte %d: accepted", pos)
		}
	}
	c := append([]byte{}, b...)
	c[len(snapshotMagic)-1] = 9
	if _, err := UnmarshalSnapshot(c); !errors.Is(err, ErrVersion) {
		t.Fatalf("future format: err = %v, want ErrVersion", err)
	}
	if _, err := UnmarshalSnapshot(append(b, 0)); err == nil {
		t.Fatal("trailing byte accepted")
	}
}

// TestSnapshotGolden pins the canonical snapshot encoding: replicas running different builds must
// agree on Hash. Run with -update after an intended format change (and bump the format version).
func TestSnapshotGolden(t *testing.T) {
	s := applyAll(t, scenario(t, 3, 4, 3))
	b, err := s.MarshalSnapshot()
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	got := hex.EncodeToString(sum[:])
	const path = "testdata/snapshot.sha256"
	if *updateGolden {
		if err := os.WriteFile(path, []byte(got+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create)", err)
	}
	if strings.TrimSpace(string(want)) != got {
		t.Fatalf("snapshot encoding changed: sha256 %s, golden %s", got, strings.TrimSpace(string(want)))
	}
}

// A snapshot whose treasury, limits or weights break the state's bounds is refused, even with a
// good checksum: Restore rebuilds the derived state from it and must be able to trust the sums.
func TestSnapshotRejectsInconsistentTreasury(t *testing.T) {
	s := applyAll(t, scenario(t, 5, 3, 1))
	encode := func(d *snapshotData) []byte {
		var buf bytes.Buffer
		buf.Write(snapshotMagic)
		if err := msgpack.NewEncoder(&buf).Encode(d); err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(buf.Bytes())
		return append(buf.Bytes(), sum[:]...)
	}
	if _, err := UnmarshalSnapshot(encode(s.canonical())); err != nil {
		t.Fatalf("the untouched canonical form: %v", err)
	}
	for name, tamper := range map[string]func(d *snapshotData){
		"reserved above balance": func(d *snapshotData) { d.Treasury.Reserved = d.Treasury.Balance + 1 },
		"balance above funded":   func(d *snapshotData) { d.Treasury.Balance = d.Treasury.Funded + 1 },
		"balances above funded":  func(d *snapshotData) { d.Treasury.Funded, d.Treasury.Balance = 1, 0 },
		"grants overflow":        func(d *snapshotData) { d.Members[0].Granted = math.MaxUint64 },
		"bad limits":             func(d *snapshotData) { d.Limits.MaxCohortMembers = MaxListLen },
		"reservation mismatch": func(d *snapshotData) {
			d.Proposals[0].Status = ProposalOpen
			d.Proposals[0].RewardPool = 1
		},
	} {
		d := s.canonical()
		d.Members = append([]Member(nil), d.Members...)
		d.Proposals = append([]Proposal(nil), d.Proposals...)
		tamper(d)
		if _, err := UnmarshalSnapshot(encode(d)); !errors.Is(err, ErrSnapshot) {
			t.Errorf("%s: err = %v, want ErrSnapshot", name, err)
		}
	}
}
