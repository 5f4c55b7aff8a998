package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cohortlab/cohort/client"
	"github.com/cohortlab/cohort/consensus"
	"github.com/cohortlab/cohort/datasets"
	"github.com/cohortlab/cohort/protocol"
	"github.com/cohortlab/cohort/trainer"
	"github.com/cohortlab/cohort/transport"
)

// writePlayText writes n bytes of the embedded play (speaker-tagged, UTF-8) to dir/name.
func writePlayText(t *testing.T, dir, name string, n int) string {
	t.Helper()
	play, err := datasets.EmbeddedPlay()
	if err != nil {
		t.Fatal(err)
	}
	text := datasets.WriteSpeakerText(play.Speeches)
	if len(text) > n {
		text = strings.ToValidUTF8(text[:n], "")
	}
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestJoinRefusesTextForAnImageCohort: a text shard joining an MLP cohort is refused at once,
// naming the shard and what the model takes, and nothing is committed.
func TestJoinRefusesTextForAnImageCohort(t *testing.T) {
	addr := startCoordinator(t)
	cl := cohortOf(t, addr, 100, "fmnist", "mlp:784-32-10", consensus.Hyperparams{InnerSteps: 5, Rounds: 2})
	dir := t.TempDir()
	shard := filepath.Join(dir, "peer-1")
	if err := os.MkdirAll(shard, 0o755); err != nil {
		t.Fatal(err)
	}
	writePlayText(t, shard, "play.txt", 4000)
	key := filepath.Join(dir, "bob.key")
	if _, err := run(t, "keygen", "--out", key); err != nil {
		t.Fatal(err)
	}
	_, err := run(t, "join", "--coordinator", addr, "--cohort", "1", "--key", key, "--data", shard, "--contributor", "bob")
	if err == nil {
		t.Fatal("join with text for an MLP cohort: no error")
	}
	msg := err.Error()
	for _, want := range []string{"--data " + shard, "mlp:784-32-10 does not take text (it trains on images)"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q lacks %q", msg, want)
		}
	}
	q, err := cl.Query(context.Background(), protocol.Query{What: protocol.QueryCohort, ID: 1, Linearizable: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(q.Cohort.Members) != 0 {
		t.Errorf("cohort 1 has members %+v after a refused join", q.Cohort.Members)
	}
}

// TestJoinRefusesBadText: text that is not UTF-8, and a mix of text and image shards, are
// refused before the member dials the coordinators, naming the file or the shards.
func TestJoinRefusesBadText(t *testing.T) {
	dir := t.TempDir()
	shard := filepath.Join(dir, "peer-1")
	if err := os.MkdirAll(shard, 0o755); err != nil {
		t.Fatal(err)
	}
	writePlayText(t, shard, "a.txt", 2000)
	if err := os.WriteFile(filepath.Join(shard, "bad.txt"), []byte("ROMEO:\nabc\xff\xfedef\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	images := filepath.Join(dir, "images")
	if err := os.MkdirAll(images, 0o755); err != nil {
		t.Fatal(err)
	}
	imgs := &datasets.Images{Name: "i", Rows: 28, Cols: 28, Classes: 10, Pixels: make([]uint8, 2*784), Labels: []uint8{1, 2}}
	if err := datasets.WriteImages(images, "train", imgs); err != nil {
		t.Fatal(err)
	}
	good := writePlayText(t, dir, "good.txt", 2000)
	base := []string{"join", "--coordinator", "127.0.0.1:1", "--cohort", "1", "--key", filepath.Join(dir, "none.key")}
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"--data", shard, "--contributor", "bob"}, []string{"--data " + shard, "peer-1/bad.txt", "UTF-8"}},
		{[]string{"--data", good, "--contributor", "bob", "--data", images, "--contributor", "carol"},
			[]string{"--data " + good + " is a text shard but --data " + images + " is an image shard"}},
	} {
		_, err := run(t, append(base, tc.args...)...)
		if err == nil {
			t.Fatalf("%v: no error", tc.args)
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%v: error %q lacks %q", tc.args, err, w)
			}
		}
	}
}

// TestProposeTextData: propose --data records the hash of the text's validation split (as the
// coordinators' validators load it) and describes the dataset.
func TestProposeTextData(t *testing.T) {
	addr := startCoordinator(t)
	dir := t.TempDir()
	text := writePlayText(t, dir, "play.txt", 30000)
	key := filepath.Join(dir, "alice.key")
	if _, err := run(t, "keygen", "--out", key); err != nil {
		t.Fatal(err)
	}
	id, err := transport.LoadKey(key)
	if err != nil {
		t.Fatal(err)
	}
	alice, err := client.Dial(client.Config{Addrs: []string{addr}, Identity: id, Timeout: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer alice.Close()
	eventually(t, 10*time.Second, "register", func() error { return alice.EnsureRegistered(context.Background(), "alice", nil) })
	fundAndGrant(t, addr, 100, alice)
	const model = "gpt:1-16-2-16"
	out, err := run(t, "propose", "--coordinator", addr, "--key", key, "--name", "lm", "--model", model, "--data", text, "--val-samples", "100", "--reward-pool", "50")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "proposal 1") {
		t.Fatalf("propose printed %q", out)
	}
	want, err := trainer.ValidationFor(model, text, 100)
	if err != nil {
		t.Fatal(err)
	}
	h := want.Hash()
	cl := memberClient(t, []string{addr}, "reader")
	q, err := cl.Query(context.Background(), protocol.Query{What: protocol.QueryProposal, ID: 1})
	if err != nil {
		t.Fatal(err)
	}
	p := q.Proposals[0]
	if string(p.ValidationHash) != string(h[:]) || !strings.HasPrefix(p.Dataset, "play.txt (validation: last 10 %, 100 samples") {
		t.Fatalf("proposal dataset %q, hash %x; want the text's %x", p.Dataset, p.ValidationHash, h)
	}
	// A hash given with --data must be the data's.
	_, err = run(t, "propose", "--coordinator", addr, "--key", key, "--name", "lm2", "--model", model, "--data", text,
		"--validation-hash", strings.Repeat("ab", 32), "--reward-pool", "10")
	if err == nil || !strings.Contains(err.Error(), "is not the hash") {
		t.Fatalf("a --validation-hash that is not --data's: %v", err)
	}
}

// TestCoordinatorDataKinds: the coordinator's --data values sort into the image path and the
// text path; two of one kind are refused.
func TestCoordinatorDataKinds(t *testing.T) {
	dir := t.TempDir()
	text := writePlayText(t, dir, "play.txt", 1000)
	texts := filepath.Join(dir, "texts")
	if err := os.MkdirAll(texts, 0o755); err != nil {
		t.Fatal(err)
	}
	writePlayText(t, texts, "a.txt", 1000)
	for _, tc := range []struct {
		paths      []string
		data, text string
		err        string
	}{
		{nil, "", "", ""},
		{[]string{"embedded"}, "embedded", "", ""},
		{[]string{"/some/fmnist"}, "/some/fmnist", "", ""},
		{[]string{text}, "", text, ""},
		{[]string{"embedded", texts}, "embedded", texts, ""},
		{[]string{texts, "/some/fmnist"}, "/some/fmnist", texts, ""},
		{[]string{text, texts}, "", "", "are both text data"},
		{[]string{"embedded", "/some/fmnist"}, "", "", "are both image data"},
		{[]string{""}, "", "", "empty path"},
	} {
		cfg, err := validationData(tc.paths)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%v: error %v, want %q", tc.paths, err, tc.err)
			}
			continue
		}
		if err != nil || cfg.Data != tc.data || cfg.Text != tc.text {
			t.Errorf("%v: Data %q Text %q (err %v), want %q and %q", tc.paths, cfg.Data, cfg.Text, err, tc.data, tc.text)
		}
	}
}
