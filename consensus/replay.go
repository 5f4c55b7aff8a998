package consensus

import (
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
)

// ReplayDir rebuilds the state of a stopped node from its directory, as a fresh node would from
// what raft hands it: the latest snapshot, if there is one, then every command of the log after
// it (Command and Batch entries), in order. Entries the state refused when they were first
// applied are refused again, so the
// result must equal the live state (compare Hash) — the check that the log alone determines the
// ledger. It returns the state and the last log index applied.
func ReplayDir(dir string) (*State, uint64, error) {
	if _, err := os.Stat(filepath.Join(dir, "raft.db")); err != nil {
		return nil, 0, fmt.Errorf("replay %s: %w", dir, err)
	}
	st := NewState()
	var from uint64 = 1
	fss, err := raft.NewFileSnapshotStoreWithLogger(dir, 1, hclog.NewNullLogger())
	if err != nil {
		return nil, 0, fmt.Errorf("replay %s: %w", dir, err)
	}
	if metas, err := fss.List(); err == nil && len(metas) > 0 {
		_, rc, err := fss.Open(metas[0].ID)
		if err != nil {
			return nil, 0, fmt.Errorf("replay %s: snapshot %s: %w", dir, metas[0].ID, err)
		}
		b, err := io.ReadAll(io.LimitReader(rc, MaxSnapshotBytes+1))
		rc.Close()
		if err != nil {
			return nil, 0, fmt.Errorf("replay %s: snapshot %s: %w", dir, metas[0].ID, err)
		}
		if st, err = UnmarshalSnapshot(b); err != nil {
			return nil, 0, fmt.Errorf("replay %s: snapshot %s: %w", dir, metas[0].ID, err)
		}
		from = metas[0].Index + 1
	}
	bolt, err := raftboltdb.New(raftboltdb.Options{Path: filepath.Join(dir, "raft.db"), NoSync: true})
	if err != nil {
		return nil, 0, fmt.Errorf("replay %s: %w", dir, err)
	}
	defer bolt.Close()
	first, err := bolt.FirstIndex()
	if err != nil {
		return nil, 0, err
	}
	last, err := bolt.LastIndex()
	if err != nil {
		return nil, 0, err
	}
	if first > from {
		return nil, 0, fmt.Errorf("replay %s: the log starts at %d but the snapshot ends at %d", dir, first, from-1)
	}
	applied := from - 1
	for i := from; i <= last; i++ {
		var l raft.Log
		if err := bolt.GetLog(i, &l); err != nil {
			return nil, 0, fmt.Errorf("replay %s: entry %d: %w", dir, i, err)
		}
		applied = i
		if l.Type != raft.LogCommand {
			continue
		}
		cmds, err := DecodeEntry(l.Data)
		if err != nil {
			continue // refused when first applied too
		}
		for _, cmd := range cmds {
			st.Apply(cmd) // a refused command changes nothing, now as then
		}
	}
	return st, applied, nil
}
