package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/cohortlab/cohort/datasets"
)

// isTextData reports whether shard's --data names text: a regular file, or a
// directory holding a .txt file. Fashion-MNIST directories and "embedded"
// are not text.
func isTextData(data string) bool {
	st, err := os.Stat(data)
	if err != nil {
		return false
	}
	if st.Mode().IsRegular() {
		return true
	}
	matches, _ := filepath.Glob(filepath.Join(data, "*.txt"))
	return st.IsDir() && len(matches) > 0
}

// shardText splits the text at --data into --peers shards with a text
// partition and writes each as OUT/peer-N/NAME.txt, one file per source
// document the shard holds a part of.
func shardText(c *cli.Context) error {
	p, err := datasets.ParseTextPartition(c.String("partition"))
	if err != nil {
		return fmt.Errorf("shard: --partition: %w", err)
	}
	data := filepath.Clean(c.String("data"))
	docs, err := datasets.LoadTexts(os.DirFS(filepath.Dir(data)), filepath.Base(data))
	if err != nil {
		return fmt.Errorf("shard: %w", err)
	}
	parts, err := p.Split(docs, c.Int("peers"), c.Uint64("seed"))
	if err != nil {
		return fmt.Errorf("shard: %w", err)
	}
	for i, part := range parts {
		dir := filepath.Join(c.String("out"), fmt.Sprintf("peer-%d", i+1))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("shard: %w", err)
		}
		size := 0
		for _, d := range part {
			name := d.Name
			if !strings.HasSuffix(name, ".txt") {
				name += ".txt"
			}
			if err := os.WriteFile(filepath.Join(dir, name), []byte(d.Text), 0o644); err != nil {
				return fmt.Errorf("shard: %w", err)
			}
			size += len(d.Text)
		}
		fp := datasets.TextFingerprint(part)
		fmt.Fprintf(c.App.Writer, "%s: %d files, %d bytes, %s\n", dir, len(part), size, fp)
	}
	return nil
}
