package main

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/cohortlab/cohort/datasets"
)

const shardPlay = `First Citizen:
Before we proceed any further, hear me speak.

All:
Speak, speak.

MENENIUS:
Why, masters, my good friends, mine honest neighbours.

First Citizen:
We know't, we know't.
`

func TestShardText(t *testing.T) {
	dir := t.TempDir()
	in := filepath.Join(dir, "play.txt")
	if err := os.WriteFile(in, []byte(shardPlay), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		partition string
		peers     string
		speeches  int
	}{
		{"speaker", "3", 4},
		{"contiguous", "2", 4},
		{"iid", "2", 4},
	} {
		t.Run(tc.partition, func(t *testing.T) {
			out := filepath.Join(dir, tc.partition)
			got, err := run(t, "shard", "--data", in, "--out", out, "--peers", tc.peers, "--partition", tc.partition, "--seed", "3")
			if err != nil {
				t.Fatal(err)
			}
			if n := strings.Count(got, " files, "); strconv.Itoa(n) != tc.peers {
				t.Fatalf("output:\n%s", got)
			}
			var all strings.Builder
			entries, _ := filepath.Glob(filepath.Join(out, "peer-*", "play.txt"))
			for _, e := range entries {
				b, err := os.ReadFile(e)
				if err != nil {
					t.Fatal(err)
				}
				all.Write(b)
			}
			if tc.partition == "speaker" {
				total := 0
				for _, e := range entries {
					docs, err := datasets.LoadTexts(os.DirFS(filepath.Dir(e)), "play.txt")
					if err != nil {
						t.Fatal(err)
					}
					p, err := datasets.ParseSpeakerText(e, docs[0].Text)
					if err != nil {
						t.Fatal(err)
					}
					if len(p.Speakers()) != 1 {
						t.Fatalf("%s: speakers %v", e, p.Speakers())
					}
					total += len(p.Speeches)
				}
				if len(entries) != 3 || total != tc.speeches {
					t.Fatalf("%d shards, %d speeches", len(entries), total)
				}
				return
			}
			if len(entries) != 2 || len(all.String()) != len(shardPlay) {
				t.Fatalf("%d shards, %d bytes, want 2 and %d", len(entries), all.Len(), len(shardPlay))
			}
		})
	}
}

func TestShardTextErrors(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.txt")
	os.WriteFile(bad, []byte("ok\xffno"), 0o644)
	good := filepath.Join(dir, "good.txt")
	os.WriteFile(good, []byte(shardPlay), 0o644)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--data", bad, "--partition", "iid"}, "invalid UTF-8 at byte offset 2"},
		{[]string{"--data", good, "--partition", "dirichlet:0.5"}, "unknown kind"},
		{[]string{"--data", good, "--partition", "speaker", "--peers", "4"}, "part 3 of 4 is empty"},
	} {
		_, err := run(t, append([]string{"shard", "--out", filepath.Join(dir, "out")}, tc.args...)...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: err = %v, want %q", tc.args, err, tc.want)
		}
	}
}
