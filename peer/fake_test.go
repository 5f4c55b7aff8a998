package peer

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/cohortlab/cohort/compress"
	"github.com/cohortlab/cohort/consensus"
	"github.com/cohortlab/cohort/datasets"
	"github.com/cohortlab/cohort/internal/wirecode"
	"github.com/cohortlab/cohort/protocol"
	"github.com/cohortlab/cohort/spec"
	"github.com/cohortlab/cohort/trainer"
	"github.com/cohortlab/cohort/transport"
)

// The test cohort: one tiny model, rounds of H inner steps on batches of testBatch.
const (
	testModel  = "mlp:4-3-2"
	testBatch  = 4
	testH      = 4
	testRounds = 3
	testCohort = 1
	testProp   = 7
	testMember = "member-key"
)

// fakeCoordinators is an in-memory, deterministic cluster for one peer. The test opens and closes
// rounds; an aggregator's aggregate of a slice is the upload it holds for it (zeros if none),
// coded down as a coordinator codes it. Hooks, called with mu held, make aggregators refuse,
// fall silent or have their slices moved.
type fakeCoordinators struct {
	mu      sync.Mutex
	prop    consensus.Proposal
	cohort  consensus.Cohort
	rounds  []consensus.Round // rounds[n-1] is round n
	models  map[string][2][]float32
	up      compress.Setting
	down    compress.Setting
	shape   compress.Shape
	uploads map[upKey][]float32 // decoded
	served  map[upKey][]float32 // aggregates served, decoded as the peer decodes them
	aborted map[uint32]bool     // rounds whose aggregates are aborted
	// exchange makes an aggregator answer an accepted upload with the slice's aggregate at once
	// (protocol.MsgExchange), as if every other update had come in already.
	exchange       bool
	aggregateCalls int // Aggregate calls
	// beforeUpload and beforeAggregate, if set, may fail a call (or change the rounds first).
	beforeUpload    func(agg string, u protocol.Upload) error
	beforeAggregate func(agg string, q protocol.AggregateRequest) error
	beforeRound     func(number uint32) error // may fail a round query

	receipts   []consensus.ReceiptBody
	joins      int
	registered int
	fetches    int // Model calls
}

type upKey struct {
	round uint32
	slice int
	agg   string
}

func newFake(t *testing.T, codec string) *fakeCoordinators {
	t.Helper()
	f := &fakeCoordinators{
		prop:   consensus.Proposal{ID: testProp, Model: testModel, Params: consensus.Hyperparams{InnerSteps: testH, Rounds: testRounds, Codec: codec}},
		cohort: consensus.Cohort{ID: testCohort, Proposal: testProp, Status: consensus.CohortRunning},
		models: map[string][2][]float32{}, uploads: map[upKey][]float32{}, served: map[upKey][]float32{}, aborted: map[uint32]bool{},
	}
	var err error
	if f.up, err = compress.Parse(codec); err != nil {
		t.Fatal(err)
	}
	if f.down, err = compress.Parse(protocol.DownCodec(codec)); err != nil {
		t.Fatal(err)
	}
	model, err := trainer.NewModel(testModel, testBatch, 1)
	if err != nil {
		t.Fatal(err)
	}
	f.shape = trainer.CodecShape(model.Layout())
	return f
}

// remote is err as a coordinator's answer reaches the peer.
func remote(typ string, err error) error {
	return &transport.RemoteError{Type: typ, Code: wirecode.Of(err), Msg: err.Error()}
}

// errSilent is what a call to an aggregator that does not answer returns.
var errSilent = errors.New("timeout: no recent network activity")

// open opens round n from the model with the given hash, in slices of sizes split among the
// aggregators named.
func (f *fakeCoordinators) open(n uint32, hash []byte, params int, aggs ...string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	r := consensus.Round{Cohort: testCohort, Number: n, Participants: []string{testMember}, ModelHash: slices.Clone(hash),
		OpenedAt: time.Now().UnixMilli(), Deadline: time.Now().Add(time.Hour).UnixMilli(), Status: consensus.RoundOpen}
	for i, a := range aggs {
		r.Slices = append(r.Slices, consensus.SliceAssignment{Start: uint64(i * params / len(aggs)), End: uint64((i + 1) * params / len(aggs)), Aggregator: a})
	}
	for len(f.rounds) < int(n) {
		f.rounds = append(f.rounds, consensus.Round{})
	}
	f.rounds[n-1] = r
	f.cohort.CurrentRound = n
}

// close closes round n with the model hash after it.
func (f *fakeCoordinators) close(n uint32, hash []byte) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.rounds[n-1].Status, f.rounds[n-1].NewModelHash = consensus.RoundClosed, slices.Clone(hash)
	f.cohort.ModelHash = slices.Clone(hash)
}

// addModel stores a model coordinators can serve.
func (f *fakeCoordinators) addModel(theta, momentum []float32) []byte {
	f.mu.Lock()
	defer f.mu.Unlock()
	h := protocol.HashParams(theta)
	f.models[string(h[:])] = [2][]float32{slices.Clone(theta), slices.Clone(momentum)}
	return h[:]
}

// aggregate is round n's aggregate as served, slice by slice.
func (f *fakeCoordinators) aggregate(n uint32, params int) []float32 {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]float32, 0, params)
	for i, sl := range f.rounds[n-1].Slices {
		got := f.served[upKey{n, i, sl.Aggregator}]
		if got == nil {
			panic(fmt.Sprintf("round %d slice %d: no aggregate served by %s", n, i, sl.Aggregator))
		}
		out = append(out, got...)
	}
	return out
}

func copyRound(r consensus.Round) consensus.Round {
	r.Slices = slices.Clone(r.Slices)
	r.Participants = slices.Clone(r.Participants)
	return r
}

func (f *fakeCoordinators) ID() string { return testMember }

func (f *fakeCoordinators) Proposal(context.Context, uint64) (consensus.Proposal, error) {
	return f.prop, nil
}

func (f *fakeCoordinators) Register(context.Context, string, []string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.registered++
	return nil
}

func (f *fakeCoordinators) Submit(_ context.Context, body consensus.Body) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	switch b := body.(type) {
	case *consensus.JoinBody:
		f.joins++
		if f.joins > 1 {
			return fmt.Errorf("member already in cohort %d: %w", b.Cohort, consensus.ErrExists)
		}
	case *consensus.ReceiptBody:
		f.receipts = append(f.receipts, *b)
	default:
		return fmt.Errorf("unexpected command %T", body)
	}
	return nil
}

func (f *fakeCoordinators) NextRound(_ context.Context, _ uint64, after uint32) (*consensus.Cohort, []consensus.Round, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := f.cohort
	if n := len(f.rounds); n > 0 && f.rounds[n-1].Number > after {
		return &c, []consensus.Round{copyRound(f.rounds[n-1])}, nil
	}
	return &c, nil, nil
}

func (f *fakeCoordinators) Round(_ context.Context, _ uint64, number uint32) (consensus.Round, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.beforeRound != nil {
		if err := f.beforeRound(number); err != nil {
			return consensus.Round{}, err
		}
	}
	if number == 0 || int(number) > len(f.rounds) {
		return consensus.Round{}, fmt.Errorf("no round %d", number)
	}
	return copyRound(f.rounds[number-1]), nil
}

func (f *fakeCoordinators) Upload(_ context.Context, agg string, u protocol.Upload, payload []byte) (protocol.AggregateReply, []byte, bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.upload(agg, u, payload); err != nil || !f.exchange {
		return protocol.AggregateReply{}, nil, false, err
	}
	rep, msg, err := f.serve(agg, protocol.AggregateRequest{Cohort: u.Cohort, Round: u.Round, Slice: u.Slice})
	return rep, msg, err == nil, err
}

// upload is an upload's admission (f.mu held).
func (f *fakeCoordinators) upload(agg string, u protocol.Upload, payload []byte) error {
	if f.beforeUpload != nil {
		if err := f.beforeUpload(agg, u); err != nil {
			return err
		}
	}
	r := f.rounds[u.Round-1]
	if r.Slices[u.Slice].Aggregator != agg {
		return remote(protocol.MsgUpload, fmt.Errorf("slice %d: %w", u.Slice, protocol.ErrNotAggregator))
	}
	k := upKey{u.Round, u.Slice, agg}
	if f.uploads[k] != nil {
		return remote(protocol.MsgUpload, fmt.Errorf("upload: %w", protocol.ErrDuplicate))
	}
	codec, err := compress.New(compress.Config{Setting: f.up, Shape: f.shape.Slice(int(u.Start), int(u.End))})
	if err != nil {
		return err
	}
	dec, err := codec.Decode(nil, payload)
	if err != nil {
		return remote(protocol.MsgUpload, fmt.Errorf("%w: %v", protocol.ErrMalformed, err))
	}
	f.uploads[k] = dec
	return nil
}

func (f *fakeCoordinators) Aggregate(_ context.Context, agg string, q protocol.AggregateRequest) (protocol.AggregateReply, []byte, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.aggregateCalls++
	return f.serve(agg, q)
}

// serve is an aggregator's answer with a slice's aggregate (f.mu held).
func (f *fakeCoordinators) serve(agg string, q protocol.AggregateRequest) (protocol.AggregateReply, []byte, error) {
	if f.beforeAggregate != nil {
		if err := f.beforeAggregate(agg, q); err != nil {
			return protocol.AggregateReply{}, nil, err
		}
	}
	r := f.rounds[q.Round-1]
	sl := r.Slices[q.Slice]
	if sl.Aggregator != agg {
		return protocol.AggregateReply{}, nil, remote(protocol.MsgAggregate, fmt.Errorf("slice %d: %w", q.Slice, protocol.ErrNotAggregator))
	}
	if f.aborted[q.Round] {
		return protocol.AggregateReply{Aborted: true}, nil, nil
	}
	k := upKey{q.Round, q.Slice, agg}
	mean := f.uploads[k]
	if mean == nil {
		mean = make([]float32, sl.End-sl.Start) // the others' updates: none here
	}
	codec, err := compress.New(compress.Config{Setting: f.down, Shape: f.shape.Slice(int(sl.Start), int(sl.End))})
	if err != nil {
		return protocol.AggregateReply{}, nil, err
	}
	msg, err := codec.Encode(nil, mean)
	if err != nil {
		return protocol.AggregateReply{}, nil, err
	}
	if f.served[k], err = codec.Decode(nil, msg); err != nil {
		return protocol.AggregateReply{}, nil, err
	}
	return protocol.AggregateReply{}, msg, nil
}

func (f *fakeCoordinators) Model(_ context.Context, _ uint64, hash []byte, n int) ([]float32, []float32, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fetches++
	m, ok := f.models[string(hash)]
	if !ok || len(m[0]) != n {
		return nil, nil, remote(protocol.MsgModel, fmt.Errorf("%w: no model %x", protocol.ErrUnavailable, hash[:4]))
	}
	return slices.Clone(m[0]), slices.Clone(m[1]), nil
}

// testImages is a small deterministic image set the model fits: 2×2 images of two classes.
func testImages() *datasets.Images {
	const n = 64
	m := &datasets.Images{Name: "test", Rows: 2, Cols: 2, Classes: 2, Pixels: make([]uint8, 4*n), Labels: make([]uint8, n)}
	for i := range n {
		for j := range 4 {
			m.Pixels[4*i+j] = uint8((i*37 + j*91) % 256)
		}
		m.Labels[i] = m.Pixels[4*i] / 128
	}
	return m
}

func testSource(t *testing.T) trainer.Source {
	t.Helper()
	imgs := testImages()
	idx := make([]int, imgs.Len())
	for i := range idx {
		idx[i] = i
	}
	src, err := trainer.NewImageSource(imgs, idx, 11)
	if err != nil {
		t.Fatal(err)
	}
	return src
}

// newTestPeer returns a joined peer over f; edit changes its config first.
func newTestPeer(t *testing.T, f *fakeCoordinators, edit func(*Config)) *Peer {
	t.Helper()
	cfg := Config{Name: "member", Coordinators: f, Cohort: testCohort, Source: testSource(t), Batch: testBatch,
		Contributors: []Contributor{{Name: "alice", Fingerprint: []byte{1}, Samples: 64}}, Logger: quiet()}
	if edit != nil {
		edit(&cfg)
	}
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Join(context.Background()); err != nil {
		t.Fatal(err)
	}
	return p
}

// mirror is a worker built as the peer builds its own, on the same data: it takes the same steps
// bit for bit.
func mirror(t *testing.T, p *Peer) *trainer.Worker {
	t.Helper()
	ts, err := spec.Of(p.prop)
	if err != nil {
		t.Fatal(err)
	}
	model, err := trainer.NewModel(testModel, testBatch, ts.Seed)
	if err != nil {
		t.Fatal(err)
	}
	w, err := trainer.NewWorker(model, testSource(t), trainer.WorkerConfig{Inner: ts.Inner, Outer: ts.Outer})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(w.Global(), p.Worker().Global()) {
		t.Fatal("the mirror does not start from the peer's θ_0")
	}
	return w
}

func hashOf(theta []float32) []byte {
	h := protocol.HashParams(theta)
	return h[:]
}

// near reports whether a and b agree to float32 rounding of values of their size.
func near(a, b []float32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if d := math.Abs(float64(a[i] - b[i])); d > 1e-6*(1+math.Abs(float64(b[i]))) {
			return false
		}
	}
	return true
}

func sameHash(a []byte, b [32]byte) bool { return bytes.Equal(a, b[:]) }

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }
