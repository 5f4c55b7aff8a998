package pipeline

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math"
	"os"
	"path/filepath"

	"github.com/cohortlab/cohort/internal/atomicfile"
)

// ErrCheckpoint is wrapped by every error decoding a stage checkpoint.
var ErrCheckpoint = errors.New("pipeline: bad stage checkpoint")

// StageCheckpoint is what one stage of a group in processes of its own saves at a round
// boundary to resume there: its parameters (θ_t over its range and, on the last stage, the copy of
// wte, which equal the stage's live parameters at a boundary), its AdamW moments and step, the
// range's outer momentum, the cohort step and samples, and its data position (the first and the
// last stage read the batches). Digest names the settings it trained under.
type StageCheckpoint struct {
	Stage, Stages int
	Round         uint32 // the last round completed
	Step          int    // the cohort step of the next inner step
	Samples       int
	AdamT         int
	Digest        [32]byte
	Source        []byte // the data position (empty on the middle stages)
	Params        []float32
	AdamM, AdamV  []float32
	Momentum      []float32 // over the owned range
}

const (
	stageCkptMagic   = "CSTG"
	stageCkptVersion = 1
	// magic, version, stage u16, stages u16, round u32, step u64, samples u64, adam t u64,
	// params u64, momentum u64, source u32, digest
	stageCkptHeader = 4 + 1 + 2 + 2 + 4 + 8 + 8 + 8 + 8 + 8 + 4 + 32
	// maxSourceState bounds the data position a checkpoint may carry.
	maxSourceState = 1 << 12
	maxCkptCount   = 1 << 40
)

// MarshalBinary encodes the checkpoint (little-endian):
//
//	"CSTG" | version (1) | stage u16 | stages u16 | round u32 | step u64 | samples u64 | adam t u64 |
//	params P u64 | momentum n u64 | source length u32 | digest (32) | source |
//	params, adam m, adam v (P float32 each) | momentum (n float32) | CRC32C of all before (u32)
func (c *StageCheckpoint) MarshalBinary() ([]byte, error) {
	P, n := len(c.Params), len(c.Momentum)
	switch {
	case len(c.AdamM) != P || len(c.AdamV) != P:
		return nil, fmt.Errorf("pipeline: checkpoint of %d parameters with %d/%d moments", P, len(c.AdamM), len(c.AdamV))
	case n > P:
		return nil, fmt.Errorf("pipeline: checkpoint momentum of %d values for %d parameters", n, P)
	case c.Stages < 1 || c.Stages > math.MaxUint16 || c.Stage < 0 || c.Stage >= c.Stages:
		return nil, fmt.Errorf("pipeline: checkpoint of stage %d of %d", c.Stage, c.Stages)
	case len(c.Source) > maxSourceState:
		return nil, fmt.Errorf("pipeline: checkpoint data position of %d bytes, at most %d", len(c.Source), maxSourceState)
	case c.Step < 0 || c.Samples < 0 || c.AdamT < 0:
		return nil, fmt.Errorf("pipeline: checkpoint step %d, samples %d, adam step %d", c.Step, c.Samples, c.AdamT)
	}
	b := make([]byte, 0, stageCkptHeader+len(c.Source)+4*(3*P+n)+4)
	b = append(b, stageCkptMagic...)
	b = append(b, stageCkptVersion)
	b = binary.LittleEndian.AppendUint16(b, uint16(c.Stage))
	b = binary.LittleEndian.AppendUint16(b, uint16(c.Stages))
	b = binary.LittleEndian.AppendUint32(b, c.Round)
	for _, v := range []int{c.Step, c.Samples, c.AdamT, P, n} {
		b = binary.LittleEndian.AppendUint64(b, uint64(v))
	}
	b = binary.LittleEndian.AppendUint32(b, uint32(len(c.Source)))
	b = append(b, c.Digest[:]...)
	b = append(b, c.Source...)
	for _, v := range [][]float32{c.Params, c.AdamM, c.AdamV, c.Momentum} {
		for _, x := range v {
			b = binary.LittleEndian.AppendUint32(b, math.Float32bits(x))
		}
	}
	return binary.LittleEndian.AppendUint32(b, crc32.Checksum(b, ckptCRC)), nil
}

var ckptCRC = crc32.MakeTable(crc32.Castagnoli)

// UnmarshalStageCheckpoint decodes b, refusing a wrong magic or version, a truncated or padded
// file, a checksum mismatch, counts out of bounds and non-finite values.
func UnmarshalStageCheckpoint(b []byte) (*StageCheckpoint, error) {
	if len(b) < stageCkptHeader+4 {
		return nil, fmt.Errorf("%w: %d bytes is shorter than the header", ErrCheckpoint, len(b))
	}
	if !bytes.Equal(b[:4], []byte(stageCkptMagic)) {
		return nil, fmt.Errorf("%w: magic %q, want %q", ErrCheckpoint, b[:4], stageCkptMagic)
	}
	if b[4] != stageCkptVersion {
		return nil, fmt.Errorf("%w: version %d, want %d", ErrCheckpoint, b[4], stageCkptVersion)
	}
	body, sum := b[:len(b)-4], binary.LittleEndian.Uint32(b[len(b)-4:])
	if got := crc32.Checksum(body, ckptCRC); got != sum {
		return nil, fmt.Errorf("%w: checksum %08x, file says %08x", ErrCheckpoint, got, sum)
	}
	le := binary.LittleEndian
	c := &StageCheckpoint{Stage: int(le.Uint16(b[5:])), Stages: int(le.Uint16(b[7:])), Round: le.Uint32(b[9:])}
	var counts [5]uint64 // step, samples, adam t, params, momentum
	for i := range counts {
		counts[i] = le.Uint64(b[13+8*i:])
		if counts[i] > maxCkptCount {
			return nil, fmt.Errorf("%w: count %d of the header is %d", ErrCheckpoint, i, counts[i])
		}
	}
	srcLen := uint64(le.Uint32(b[53:]))
	copy(c.Digest[:], b[57:89])
	P, n := counts[3], counts[4]
	switch {
	case c.Stages < 1 || c.Stage >= c.Stages:
		return nil, fmt.Errorf("%w: stage %d of %d", ErrCheckpoint, c.Stage, c.Stages)
	case n > P:
		return nil, fmt.Errorf("%w: momentum of %d values for %d parameters", ErrCheckpoint, n, P)
	case srcLen > maxSourceState:
		return nil, fmt.Errorf("%w: data position of %d bytes, at most %d", ErrCheckpoint, srcLen, maxSourceState)
	case uint64(len(b)) != stageCkptHeader+srcLen+4*(3*P+n)+4:
		return nil, fmt.Errorf("%w: %d bytes for %d parameters, %d momentum values and a %d-byte data position (truncated or padded)",
			ErrCheckpoint, len(b), P, n, srcLen)
	}
	c.Step, c.Samples, c.AdamT = int(counts[0]), int(counts[1]), int(counts[2])
	off := stageCkptHeader
	if srcLen > 0 {
		c.Source = append([]byte(nil), b[off:off+int(srcLen)]...)
	}
	off += int(srcLen)
	vecs := make([][]float32, 4)
	for k, m := range []uint64{P, P, P, n} {
		v := make([]float32, m)
		for i := range v {
			x := math.Float32frombits(le.Uint32(b[off:]))
			if math.IsNaN(float64(x)) || math.IsInf(float64(x), 0) {
				return nil, fmt.Errorf("%w: vector %d value %d is %v", ErrCheckpoint, k, i, x)
			}
			v[i] = x
			off += 4
		}
		vecs[k] = v
	}
	c.Params, c.AdamM, c.AdamV, c.Momentum = vecs[0], vecs[1], vecs[2], vecs[3]
	return c, nil
}

// checkpointFiles are stage s of S's checkpoint files in dir: the latest and the one before it.
// A stage keeps both because the group's stages finish a round at slightly different times: a
// stage killed between two others' saves leaves the group one round apart at most, and the
// restarted group resumes from the latest round every stage has.
func checkpointFiles(dir string, s, S int) (latest, previous string) {
	base := filepath.Join(dir, fmt.Sprintf("stage-%d-of-%d", s, S))
	return base + ".ckpt", base + ".prev.ckpt"
}

// saveCheckpoint writes c as the latest checkpoint in dir, the latest before it becoming the
// previous one; each file is written whole or not at all (a temporary file renamed over it).
func saveCheckpoint(dir string, c *StageCheckpoint) error {
	b, err := c.MarshalBinary()
	if err != nil {
		return err
	}
	latest, prev := checkpointFiles(dir, c.Stage, c.Stages)
	if err := os.Rename(latest, prev); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("checkpoint %s: %w", latest, err)
	}
	if err := atomicfile.Write(latest, b, 0o600); err != nil {
		return fmt.Errorf("checkpoint %s: %w", latest, err)
	}
	return nil
}

// loadCheckpoints reads stage s of S's checkpoints in dir, the latest first; a missing file is
// skipped, one that does not decode or is another stage's is an error naming it.
func loadCheckpoints(dir string, s, S int) ([]*StageCheckpoint, error) {
	var out []*StageCheckpoint
	latest, prev := checkpointFiles(dir, s, S)
	for _, path := range []string{latest, prev} {
		b, err := os.ReadFile(path)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("checkpoint %s: %w", path, err)
		}
		c, err := UnmarshalStageCheckpoint(b)
		if err != nil {
			return nil, fmt.Errorf("checkpoint %s: %w", path, err)
		}
		if c.Stage != s || c.Stages != S {
			return nil, fmt.Errorf("checkpoint %s: %w: it is stage %d of %d's, not stage %d of %d's", path, ErrCheckpoint, c.Stage, c.Stages, s, S)
		}
		out = append(out, c)
	}
	if len(out) == 2 && out[1].Round > out[0].Round { // a save that died between its renames
		out[0], out[1] = out[1], out[0]
	}
	return out, nil
}
