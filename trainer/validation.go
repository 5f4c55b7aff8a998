package trainer

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"

	"github.com/cohortlab/cohort/trainer/nn"
)

// Validation is a held-out validation split a validator measures the model and scores updates
// on: the coordinators hold it, peers never train on it.
type Validation struct {
	b          nn.Batch
	n          int
	xw, tw, yw int // per-sample widths of X, Tokens and Y
}

// NewValidation wraps a batch of n samples.
func NewValidation(b nn.Batch, n int) (*Validation, error) {
	if n <= 0 || len(b.X)%n != 0 || len(b.Tokens)%n != 0 || len(b.Y)%n != 0 {
		return nil, fmt.Errorf("validation: a batch of %d X, %d tokens and %d targets is not %d samples", len(b.X), len(b.Tokens), len(b.Y), n)
	}
	return &Validation{b: b, n: n, xw: len(b.X) / n, tw: len(b.Tokens) / n, yw: len(b.Y) / n}, nil
}

// ValidationFor loads the validation split of the task a proposal's model names (the same one
// `cohort train` and `cohort simulate` evaluate on), capped at max samples (0 = all).
func ValidationFor(model, dataDir string, max int) (*Validation, error) {
	if model == "mlp" || strings.HasPrefix(model, "mlp:") {
		// The test split as buildMLPTask takes it, without partitioning the training set.
		_, test, _, err := LoadFashionMNIST(dataDir)
		if err != nil {
			return nil, fmt.Errorf("validation data for %s: %w", model, err)
		}
		n := test.Len()
		if max > 0 && max < n {
			n = max
		}
		idx := make([]int, n)
		for i := range idx {
			idx[i] = i
		}
		var b nn.Batch
		ImageBatch(&b, test, idx)
		return NewValidation(b, n)
	}
	task, info, err := BuildTask(TaskSpec{Model: model, Workers: 1, DataDir: dataDir, ValSamples: max})
	if err != nil {
		return nil, fmt.Errorf("validation data for %s: %w", model, err)
	}
	return NewValidation(task.Val, info.ValSamples)
}

// Len is the number of samples.
func (v *Validation) Len() int { return v.n }

// All is the whole split as one batch (read only).
func (v *Validation) All() nn.Batch { return v.b }

// Subset fills dst with the samples idx.
func (v *Validation) Subset(dst *nn.Batch, idx []int) {
	dst.X, dst.Tokens, dst.Y = dst.X[:0], dst.Tokens[:0], dst.Y[:0]
	for _, i := range idx {
		dst.X = append(dst.X, v.b.X[i*v.xw:(i+1)*v.xw]...)
		dst.Tokens = append(dst.Tokens, v.b.Tokens[i*v.tw:(i+1)*v.tw]...)
		dst.Y = append(dst.Y, v.b.Y[i*v.yw:(i+1)*v.yw]...)
	}
}

// Hash identifies the split: SHA-256 over its sample count, inputs and targets. A proposal
// records it (consensus.Proposal.ValidationHash) so that every validator scores on the same data.
func (v *Validation) Hash() [32]byte {
	h := sha256.New()
	var buf [8]byte
	put := func(x uint64) {
		binary.LittleEndian.PutUint64(buf[:], x)
		h.Write(buf[:])
	}
	h.Write([]byte("cohort-validation-v1"))
	put(uint64(v.n))
	put(uint64(len(v.b.X)))
	for _, x := range v.b.X {
		binary.LittleEndian.PutUint32(buf[:4], math.Float32bits(x))
		h.Write(buf[:4])
	}
	put(uint64(len(v.b.Tokens)))
	for _, t := range v.b.Tokens {
		put(uint64(t))
	}
	put(uint64(len(v.b.Y)))
	for _, y := range v.b.Y {
		put(uint64(y))
	}
	var out [32]byte
	h.Sum(out[:0])
	return out
}

// Draw returns k disjoint micro-batches of m sample indices each, drawn without replacement
// with the given seed (k·m must not exceed Len).
func (v *Validation) Draw(seed uint64, k, m int) ([][]int, error) {
	if k < 1 || m < 1 || k*m > v.n {
		return nil, fmt.Errorf("validation: %d micro-batches of %d from %d samples", k, m, v.n)
	}
	perm := rand.New(rand.NewPCG(seed, 0x76616c)).Perm(v.n)
	out := make([][]int, k)
	for i := range out {
		out[i] = perm[i*m : (i+1)*m]
	}
	return out, nil
}
