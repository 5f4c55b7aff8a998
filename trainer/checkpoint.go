package trainer

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math"
	"os"

	"github.com/cohortlab/cohort/internal/atomicfile"
)

// Checkpoint is what a peer needs to resume where it stopped: the global parameters θ_t and outer
// momentum it holds, its error-feedback residual, and its inner AdamW state.
type Checkpoint struct {
	Cohort   uint64
	Round    uint32 // the last round this replica has seen
	Theta    []float32
	Momentum []float32
	Residual []float32
	AdamM    []float32
	AdamV    []float32
	AdamT    int
}

// ErrCheckpoint is wrapped by every checkpoint decoding error.
var ErrCheckpoint = errors.New("trainer: bad checkpoint")

const (
	ckptMagic   = "CHKP"
	ckptVersion = 1
	ckptHeader  = 4 + 1 + 8 + 4 + 8 + 8 // magic, version, cohort, round, adam t, params
	ckptVectors = 5
)

var ckptCRC = crc32.MakeTable(crc32.Castagnoli)

// MarshalBinary encodes the checkpoint:
//
//	"CHKP" | version (1 byte) | cohort u64 | round u32 | adam t u64 | params n u64 |
//	θ, momentum, residual, adam m, adam v (n little-endian float32 each) | CRC32C of all before (u32)
func (c *Checkpoint) MarshalBinary() ([]byte, error) {
	n := len(c.Theta)
	for _, v := range [][]float32{c.Momentum, c.Residual, c.AdamM, c.AdamV} {
		if len(v) != n {
			return nil, fmt.Errorf("trainer: checkpoint vectors of %d and %d values", n, len(v))
		}
	}
	b := make([]byte, 0, ckptHeader+ckptVectors*4*n+4)
	b = append(b, ckptMagic...)
	b = append(b, ckptVersion)
	b = binary.LittleEndian.AppendUint64(b, c.Cohort)
	b = binary.LittleEndian.AppendUint32(b, c.Round)
	b = binary.LittleEndian.AppendUint64(b, uint64(c.AdamT))
	b = binary.LittleEndian.AppendUint64(b, uint64(n))
	for _, v := range [][]float32{c.Theta, c.Momentum, c.Residual, c.AdamM, c.AdamV} {
		for _, x := range v {
			b = binary.LittleEndian.AppendUint32(b, math.Float32bits(x))
		}
	}
	return binary.LittleEndian.AppendUint32(b, crc32.Checksum(b, ckptCRC)), nil
}

// UnmarshalCheckpoint decodes b, refusing a wrong magic or version, a truncated or padded file, a
// checksum mismatch and non-finite values.
func UnmarshalCheckpoint(b []byte) (*Checkpoint, error) {
	if len(b) < ckptHeader+4 {
		return nil, fmt.Errorf("%w: %d bytes is shorter than the header", ErrCheckpoint, len(b))
	}
	if !bytes.Equal(b[:4], []byte(ckptMagic)) {
		return nil, fmt.Errorf("%w: magic %q, want %q", ErrCheckpoint, b[:4], ckptMagic)
	}
	if b[4] != ckptVersion {
		return nil, fmt.Errorf("%w: version %d, want %d", ErrCheckpoint, b[4], ckptVersion)
	}
	adamT := binary.LittleEndian.Uint64(b[17:])
	if adamT > 1<<40 {
		return nil, fmt.Errorf("%w: AdamW step count %d", ErrCheckpoint, adamT)
	}
	c := &Checkpoint{
		Cohort: binary.LittleEndian.Uint64(b[5:]),
		Round:  binary.LittleEndian.Uint32(b[13:]),
		AdamT:  int(adamT),
	}
	n := binary.LittleEndian.Uint64(b[25:])
	if n > uint64(len(b)) || uint64(len(b)) != ckptHeader+ckptVectors*4*n+4 {
		return nil, fmt.Errorf("%w: %d bytes for %d parameters (truncated or padded)", ErrCheckpoint, len(b), n)
	}
	body, sum := b[:len(b)-4], binary.LittleEndian.Uint32(b[len(b)-4:])
	if got := crc32.Checksum(body, ckptCRC); got != sum {
		return nil, fmt.Errorf("%w: checksum %08x, file says %08x", ErrCheckpoint, got, sum)
	}
	vecs := make([][]float32, ckptVectors)
	off := ckptHeader
	for k := range vecs {
		v := make([]float32, n)
		for i := range v {
			x := math.Float32frombits(binary.LittleEndian.Uint32(b[off:]))
			if math.IsNaN(float64(x)) || math.IsInf(float64(x), 0) {
				return nil, fmt.Errorf("%w: vector %d value %d is %v", ErrCheckpoint, k, i, x)
			}
			v[i] = x
			off += 4
		}
		vecs[k] = v
	}
	c.Theta, c.Momentum, c.Residual, c.AdamM, c.AdamV = vecs[0], vecs[1], vecs[2], vecs[3], vecs[4]
	return c, nil
}

// SaveCheckpoint writes c to path atomically (a temporary file renamed over it).
func SaveCheckpoint(path string, c *Checkpoint) error {
	b, err := c.MarshalBinary()
	if err != nil {
		return err
	}
	if err := atomicfile.Write(path, b, 0o600); err != nil {
		return fmt.Errorf("checkpoint %s: %w", path, err)
	}
	return nil
}

// LoadCheckpoint reads a checkpoint file; the error names the file and what is wrong.
func LoadCheckpoint(path string) (*Checkpoint, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	c, err := UnmarshalCheckpoint(b)
	if err != nil {
		return nil, fmt.Errorf("checkpoint %s: %w", path, err)
	}
	return c, nil
}

// InnerState returns copies of the inner AdamW moments and step count.
func (w *Worker) InnerState() (m, v []float32, t int) { return w.inner.State() }

// SetInnerState restores the inner AdamW moments and step count.
func (w *Worker) SetInnerState(m, v []float32, t int) error {
	if len(m) != len(w.inner.m) || len(v) != len(w.inner.v) || t < 0 {
		return fmt.Errorf("inner state of %d/%d values (step %d) for %d parameters", len(m), len(v), t, len(w.inner.m))
	}
	copy(w.inner.m, m)
	copy(w.inner.v, v)
	w.inner.t = t
	return nil
}
