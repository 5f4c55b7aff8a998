package coordinator

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"strings"
	"sync"
	"time"

	"github.com/cohortlab/cohort/consensus"
	"github.com/cohortlab/cohort/protocol"
	"github.com/cohortlab/cohort/spec"
	"github.com/cohortlab/cohort/trainer"
	"github.com/cohortlab/cohort/trainer/nn"
)

// ValidationConfig configures the validator every coordinator runs: it holds the proposal's
// validation split, and at every model θ_t a cohort reaches it computes the validation gradients
// of K micro-batches (for scoring updates) and the validation loss and accuracy (for reports).
// Zero values mean the defaults.
type ValidationConfig struct {
	// Data is where image models' (mlp) validation split is loaded from (trainer.TaskSpec.DataDir:
	// "" = the system's Fashion-MNIST if installed, else the embedded subset; "embedded"; or a
	// directory).
	Data string
	// Text is where byte-level language models' (gpt) validation text is loaded from: a UTF-8 file
	// or a directory of .txt files, whose last 10 % validates (trainer.ValidationFor); "" or
	// "embedded" = the embedded play. A proposal's ValidationHash must match what it gives. One
	// coordinator thus serves image and text proposals.
	Text string
	// Samples caps the validation split; default 1000.
	Samples int
	// Batches is K, the number of validation micro-batches per round; default 8.
	Batches int
	// BatchSize is the samples per micro-batch; default 64 (less when the split is small).
	BatchSize int
	// Off disables validation: rounds are then recorded as unscored and nobody is paid.
	Off bool
	// LoadDelay holds loading back this long: fault injection for simulations and tests (a slow
	// or busy machine, whose rounds close before its validator is ready).
	LoadDelay time.Duration
}

func (c ValidationConfig) withDefaults() ValidationConfig {
	if c.Samples == 0 {
		c.Samples = 1000
	}
	if c.Batches == 0 {
		c.Batches = 8
	}
	if c.BatchSize == 0 {
		c.BatchSize = 64
	}
	return c
}

// dataFor is where the validation split of model is loaded from: Text for a GPT, Data for
// the others (the character model takes the embedded play whatever Data says).
func (c ValidationConfig) dataFor(model string) string {
	if strings.HasPrefix(model, "gpt:") {
		return c.Text
	}
	if model == "charlm" {
		return ""
	}
	return c.Data
}

// validator measures one cohort's models. It is safe for concurrent use.
type validator struct {
	val    *trainer.Validation
	k, m   int
	mu     sync.Mutex // guards model
	model  nn.Model
	smu    sync.Mutex // guards states and order
	states map[[32]byte]*valState
	order  [][32]byte // oldest first, bounded
	// spent accumulates the wall time of the measurements (one goroutine each, the model's own
	// kernels: its CPU time on a machine that is not oversubscribed), for Server.Validation.
	spent *validationStats
}

// validationStats is what this node's validators have measured so far: how many models and the
// seconds it took (the cost of scoring, against the round time).
type validationStats struct {
	mu      sync.Mutex
	models  int
	seconds float64
}

func (v *validationStats) add(d time.Duration) {
	if v == nil {
		return
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	v.models++
	v.seconds += d.Seconds()
}

// valState is what the validator measured at one θ (by hash). done closes when it is ready.
type valState struct {
	done    chan struct{}
	grads   [][]float32 // K validation gradients
	metrics consensus.RoundMetrics
	err     error
}

const keepStates = 6

// newValidator loads the validation split for proposal p and checks it against the hash the
// proposal recorded.
func newValidator(cfg ValidationConfig, p consensus.Proposal) (*validator, error) {
	if cfg.Off {
		return nil, fmt.Errorf("validation is off on this coordinator")
	}
	val, err := trainer.ValidationFor(p.Model, cfg.dataFor(p.Model), cfg.Samples)
	if err != nil {
		return nil, err
	}
	if len(p.ValidationHash) > 0 {
		if h := val.Hash(); string(h[:]) != string(p.ValidationHash) {
			return nil, fmt.Errorf("validation split %x differs from proposal %d's %x", h[:8], p.ID, p.ValidationHash[:min(8, len(p.ValidationHash))])
		}
	}
	k, m := cfg.Batches, cfg.BatchSize
	if k*m > val.Len() {
		m = val.Len() / k
	}
	if m < 1 {
		return nil, fmt.Errorf("validation split of %d samples is too small for %d micro-batches", val.Len(), k)
	}
	model, err := trainer.NewModel(p.Model, m, spec.InitSeed(p.ID))
	if err != nil {
		return nil, err
	}
	return &validator{val: val, k: k, m: m, model: model, states: map[[32]byte]*valState{}}, nil
}

// measure starts measuring θ (whose hash is h) unless it is measured already; theta is copied.
func (v *validator) measure(theta []float32, h [32]byte) {
	v.smu.Lock()
	if _, ok := v.states[h]; ok {
		v.smu.Unlock()
		return
	}
	st := &valState{done: make(chan struct{})}
	v.states[h] = st
	v.order = append(v.order, h)
	for len(v.order) > keepStates {
		delete(v.states, v.order[0])
		v.order = v.order[1:]
	}
	v.smu.Unlock()
	theta = append([]float32(nil), theta...)
	go func() {
		defer close(st.done)
		start := time.Now()
		st.grads, st.metrics, st.err = v.compute(theta, h)
		v.spent.add(time.Since(start))
	}()
}

// compute runs the K micro-batch gradients and the whole-split evaluation at θ.
func (v *validator) compute(theta []float32, h [32]byte) ([][]float32, consensus.RoundMetrics, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	copy(v.model.Params(), theta)
	draws, err := v.val.Draw(binary.LittleEndian.Uint64(h[:8]), v.k, v.m)
	if err != nil {
		return nil, consensus.RoundMetrics{}, err
	}
	grads := make([][]float32, v.k)
	var b nn.Batch
	for k, idx := range draws {
		v.val.Subset(&b, idx)
		grads[k] = make([]float32, len(theta))
		if _, err := v.model.Grad(b, grads[k]); err != nil {
			return nil, consensus.RoundMetrics{}, fmt.Errorf("validation gradient: %w", err)
		}
	}
	lossSum, correct, count, err := v.model.Eval(v.val.All())
	if err != nil || count == 0 {
		return grads, consensus.RoundMetrics{}, err
	}
	loss := lossSum / float64(count)
	m := consensus.RoundMetrics{Measured: true, Samples: uint32(v.val.Len()),
		ValAccuracyBP: uint32(math.Round(10000 * float64(correct) / float64(count)))}
	if loss >= 0 && loss < 1e12 {
		m.ValLossMicro = uint64(math.Round(loss * 1e6))
	}
	return grads, m, nil
}

// errNotMeasured: the validator never started measuring a model (it was not loaded yet when
// the replica held it, or the state was dropped as old).
var errNotMeasured = errors.New("the validator has not measured this model")

// state waits for the measurement at θ with hash h; it fails at once if θ was never measured here.
func (v *validator) state(ctx context.Context, h []byte) (*valState, error) {
	v.smu.Lock()
	var st *valState
	if len(h) == 32 {
		st = v.states[[32]byte(h)]
	}
	v.smu.Unlock()
	if st == nil {
		return nil, fmt.Errorf("model %x: %w", h[:min(8, len(h))], errNotMeasured)
	}
	select {
	case <-st.done:
		return st, st.err
	case <-ctx.Done():
		return nil, fmt.Errorf("%w: validation at %x not ready: %w", protocol.ErrUnavailable, h[:8], ctx.Err())
	}
}
