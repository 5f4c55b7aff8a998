package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cohortlab/cohort/consensus"
	"github.com/cohortlab/cohort/datasets"
	"github.com/cohortlab/cohort/trainer"
	"github.com/cohortlab/cohort/trainer/nn"
)

// auditRecords is a finished cohort of three members: m1 speaks for alice and bob, m2 for another
// alice, m3 for dave; m1 and m2 trained, m3 never did; the ledger paid m1's alice and m2's alice.
func auditRecords() cohortRecords {
	return cohortRecords{
		proposal: consensus.Proposal{ID: 4, Model: "mlp:784-16-10"},
		cohort: consensus.Cohort{ID: 2, Proposal: 4, Status: consensus.CohortDone, Members: []consensus.CohortMember{
			{Member: "m1", Contributors: []consensus.ContributorData{{Name: "m1/alice"}, {Name: "m1/bob"}}},
			{Member: "m2", Contributors: []consensus.ContributorData{{Name: "m2/alice"}}},
			{Member: "m3", Contributors: []consensus.ContributorData{{Name: "m3/dave"}}},
		}},
		rounds: []consensus.Round{
			{Cohort: 2, Number: 1, Receipts: []consensus.Receipt{{Member: "m1"}, {Member: "m2"}}},
			{Cohort: 3, Number: 1, Receipts: []consensus.Receipt{{Member: "m3"}}}, // another cohort's
		},
		ledger: consensus.Ledger{Payouts: []consensus.Payout{
			{Cohort: 2, Round: 1, Contributor: "m1/alice", Data: 6, Compute: 4},
			{Cohort: 2, Round: 1, Contributor: "m2/alice", Data: 5},
			{Cohort: 3, Round: 1, Contributor: "m3/dave", Data: 9},
		}},
	}
}

func TestAuditPlayers(t *testing.T) {
	dirs := func(names ...string) []namedDir {
		var out []namedDir
		for _, n := range names {
			out = append(out, namedDir{n, "/shards/" + n})
		}
		return out
	}
	for _, tc := range []struct {
		name  string
		given []namedDir
		want  string // the players, shown:payout, or the error
	}{
		{"names and keys", dirs("bob", "m2/alice", "m1/alice"), "m1/alice:10 bob:0 m2/alice:5"},
		{"one who never trained", dirs("m1/alice", "bob", "m2/alice", "dave"), "m1/alice:10 bob:0 m2/alice:5 dave:0"},
		{"a name of two members", dirs("alice", "bob"), `names "alice", the name of contributors of 2 members of cohort 2: name it by its key, one of m1/alice, m2/alice`},
		{"a paid one left out", dirs("m1/alice", "bob"), "no shard for m2/alice (paid 5) of cohort 2"},
		{"one who trained left out", dirs("m1/alice", "m2/alice"), "no shard for bob (trained, paid nothing)"},
		{"a stranger", dirs("m1/alice", "m2/alice", "bob", "eve"), `"eve", who is not a contributor of cohort 2 (its contributors: m1/alice, bob, m2/alice, dave)`},
		{"one twice", []namedDir{{"bob", "/a"}, {"m1/bob", "/b"}}, "two shards for bob: /a and /b"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ps, err := auditPlayers(auditRecords(), tc.given)
			var got string
			if err != nil {
				got = err.Error()
			} else {
				var s []string
				for _, p := range ps {
					s = append(s, fmt.Sprintf("%s:%d", p.shown, p.payout))
				}
				got = strings.Join(s, " ")
			}
			if !strings.Contains(got, tc.want) {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}

func TestShardDirs(t *testing.T) {
	dir := t.TempDir()
	for _, sub := range []string{"carol", "alice", ".hidden"} {
		if err := os.MkdirAll(filepath.Join(dir, "all", sub), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "all", "notes.md"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "empty"), 0o755); err != nil {
		t.Fatal(err)
	}
	text := writePlayText(t, dir, "play.txt", 500)
	imgs := filepath.Join(dir, "imgs")
	if err := os.MkdirAll(imgs, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := datasets.WriteImages(imgs, "train", &datasets.Images{Name: "x", Rows: 28, Cols: 28, Classes: 10, Pixels: make([]uint8, 784), Labels: []uint8{1}}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		shards, want string
	}{
		{filepath.Join(dir, "all"), fmt.Sprintf("alice=%s carol=%s", filepath.Join(dir, "all", "alice"), filepath.Join(dir, "all", "carol"))},
		{"alice=./a, bob = ./b ", "alice=./a bob=./b"},
		{filepath.Join(dir, "empty"), "has no sub-directories"},
		{imgs, "is itself a shard: name its contributor, NAME=" + imgs},
		{text, "is a file: name its contributor"},
		{filepath.Join(dir, "nothing"), "neither a directory of shards nor NAME=DIR"},
		{"alice=./a,=./b", `"=./b": want NAME=DIR`},
		{"alice=", `"alice=": want NAME=DIR`},
	} {
		ds, err := shardDirs(tc.shards)
		var got string
		if err != nil {
			got = err.Error()
		} else {
			var s []string
			for _, d := range ds {
				s = append(s, d.name+"="+d.dir)
			}
			got = strings.Join(s, " ")
		}
		if !strings.Contains(got, tc.want) {
			t.Errorf("--shards %s: got %q, want %q", tc.shards, got, tc.want)
		}
	}
}

// A text shard loads as cohort join loads it, for a byte-level GPT: its size in bytes, a source of
// the model's windows, and refused when it is not the text its contributor registered or the
// model takes images.
func TestLoadAuditShardText(t *testing.T) {
	dir := t.TempDir()
	shard := filepath.Join(dir, "alice")
	if err := os.MkdirAll(shard, 0o755); err != nil {
		t.Fatal(err)
	}
	writePlayText(t, shard, "part.txt", 3000)
	docs, err := loadTexts(shard)
	if err != nil {
		t.Fatal(err)
	}
	fp := datasets.TextFingerprint(docs)
	size := 0
	for _, d := range docs {
		size += len(d.Text)
	}
	gpt, err := trainer.NewModel("gpt:1-16-2-32", 0, 1)
	if err != nil {
		t.Fatal(err)
	}
	pl := auditPlayer{key: "m1/alice", shown: "alice", dir: shard, fingerprint: fp.Digest[:]}
	sh, err := loadAuditShard(gpt, pl, seven)
	if err != nil {
		t.Fatal(err)
	}
	src, err := sh.Open(0)
	if err != nil {
		t.Fatal(err)
	}
	var b nn.Batch
	src.Next(&b, 2)
	if sh.Size != size || sh.Name != "m1/alice" || len(b.Tokens) != 2*32 {
		t.Errorf("shard %s of %d bytes, a batch of %d tokens", sh.Name, sh.Size, len(b.Tokens))
	}
	pl.fingerprint = make([]byte, 32)
	if _, err := loadAuditShard(gpt, pl, seven); err == nil || !strings.Contains(err.Error(), "is not the 00000000") {
		t.Errorf("another fingerprint: %v", err)
	}
	mlp, err := trainer.NewModel("mlp:784-16-10", 0, 1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := loadAuditShard(mlp, auditPlayer{key: "m1/alice", dir: shard}, seven); err == nil || !strings.Contains(err.Error(), "does not take text") {
		t.Errorf("text for an MLP: %v", err)
	}
}

func seven(int) uint64 { return 7 }
