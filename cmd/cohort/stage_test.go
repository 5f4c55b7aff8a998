package main

import (
	"crypto/rand"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cohortlab/cohort/transport"
)

// TestStageChecksItsOwnKey: a stage whose --key is not the key --peers lists for it is refused
// before it listens, naming both keys.
func TestStageChecksItsOwnKey(t *testing.T) {
	dir := t.TempDir()
	id, err := transport.GenerateIdentity(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	other, err := transport.GenerateIdentity(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	key := filepath.Join(dir, "s0.key")
	if err := id.SaveKey(key); err != nil {
		t.Fatal(err)
	}
	_, err = run(t, "stage", "--model", "gpt:2-32-2-16", "--stage", "0/1", "--key", key, "--peers", other.NodeID().String()+"@127.0.0.1:1")
	if err == nil || !strings.Contains(err.Error(), other.NodeID().String()) || !strings.Contains(err.Error(), id.NodeID().String()) {
		t.Errorf("a stage with another key than --peers lists: %v", err)
	}
}

func TestParseStage(t *testing.T) {
	for _, tc := range []struct {
		in   string
		i, n int
		ok   bool
	}{
		{"0/1", 0, 1, true}, {"2/4", 2, 4, true}, {"4/4", 0, 0, false}, {"-1/2", 0, 0, false},
		{"1", 0, 0, false}, {"a/b", 0, 0, false}, {"0/0", 0, 0, false}, {"", 0, 0, false},
	} {
		i, n, err := parseStage(tc.in)
		if (err == nil) != tc.ok || i != tc.i || n != tc.n {
			t.Errorf("parseStage(%q) = %d, %d, %v", tc.in, i, n, err)
		}
	}
}
