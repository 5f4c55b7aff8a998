package peer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sort"
	"sync"
	"time"

	"github.com/cohortlab/cohort/client"
	"github.com/cohortlab/cohort/compress"
	"github.com/cohortlab/cohort/consensus"
	"github.com/cohortlab/cohort/protocol"
	"github.com/cohortlab/cohort/spec"
	"github.com/cohortlab/cohort/trainer"
	"github.com/cohortlab/cohort/trainer/nn"
)

// Contributor is one data owner whose data this peer trains on.
type Contributor struct {
	Name        string
	Fingerprint []byte // datasets.Fingerprint digest of the contributor's samples
	Samples     uint64
}

// Config configures a peer. Zero values mean the documented defaults.
type Config struct {
	// Name is the member name registered with the cohort. Required.
	Name string
	// Client is the member's connection to the coordinators. Required unless Coordinators is set.
	Client *client.Client
	// Coordinators, if set, is how the peer reaches the coordinators instead of
	// ClientCoordinators(Client).
	Coordinators Coordinators
	// Worker, if set, wraps the DiLoCo worker the peer builds from the cohort's proposal: the peer
	// drives the Worker it returns. Nil means the trainer.Worker itself.
	Worker func(Worker) Worker
	// Cohort to join. Required.
	Cohort uint64
	// Contributors whose data Source draws from. Required unless Bind is set.
	Contributors []Contributor
	// Source yields the training batches. Required unless Bind is set.
	Source trainer.Source
	// Bind, if set, builds Source and Contributors for the cohort's model once Join has built it:
	// for data whose samples depend on the model (a text shard's windows and sample count depend
	// on its context). Join calls it before it registers the member or submits the join; its error
	// (ErrDataMismatch for data the model cannot train on, see TextFits) refuses the join with
	// nothing committed. What it returns replaces Source and Contributors.
	Bind func(model nn.Model) (trainer.Source, []Contributor, error)
	// Fits, if set, reports whether Source's data suits the cohort's model (ImagesFit for image
	// shards). Join calls it with the model the cohort's proposal names before it registers the
	// member or submits the join: data the model cannot train on is refused before anything is
	// committed, rather than failing every round after.
	Fits func(model nn.Model) error
	// Batch is the inner batch size; zero means the model's default.
	Batch int
	// Poll is how long the peer waits after a failed check for a new round; zero means 200ms.
	Poll time.Duration
	// Logger; nil means slog.Default().
	Logger *slog.Logger
	// OnRound, if set, is called after every round the peer took part in.
	OnRound func(Report)
	// Checkpoint, if set, is a file the peer saves its replica, residual and optimizer state to after
	// every round, and resumes from when it starts again.
	Checkpoint string
	// Overlap is τ, the inner steps the peer takes while its update travels and the aggregate comes
	// back (0 ≤ τ < H): communication overlaps compute. They are carried onto θ_{t+1}
	// (trainer.Worker.OuterStepCarry) and count towards the next round's H. Zero means none: the
	// peer idles while it waits for the aggregate. The global replica is the same either way.
	Overlap int
}

// Report describes one round of this peer.
type Report struct {
	Round          uint32
	Rounds         uint32
	Applied        bool // false: the round was abandoned, or this peer was late
	TrainLoss      float64
	Samples        int
	PayloadBytes   int // encoded update bytes uploaded this round
	AggregateBytes int // encoded aggregate bytes fetched this round
	ComputeSeconds float64
	RoundSeconds   float64
	ModelHash      [32]byte
}

// Validate reports a config the peer cannot run with.
func (c Config) Validate() error {
	switch {
	case c.Name == "":
		return errors.New("peer: no member name")
	case c.Client == nil && c.Coordinators == nil:
		return errors.New("peer: no coordinator client")
	case c.Cohort == 0:
		return errors.New("peer: no cohort")
	case len(c.Contributors) == 0 && c.Bind == nil:
		return errors.New("peer: no contributors")
	case c.Source == nil && c.Bind == nil:
		return errors.New("peer: no data")
	case c.Overlap < 0:
		return fmt.Errorf("peer: overlap %d steps: want ≥ 0", c.Overlap)
	}
	return nil
}

// Peer is one member training in a cohort. It is the driver of its round state: it executes the
// state's decisions over the coordinators and its worker, and owns every goroutine of a round
// (the slices' uploads and fetches, the overlap steps, the receipts).
type Peer struct {
	cfg      Config
	log      *slog.Logger
	co       Coordinators
	prop     consensus.Proposal
	worker   *trainer.Worker
	w        Worker // worker, as Config.Worker wraps it
	st       state
	fb       feedback
	down     compress.Setting // codec of the aggregates coming down
	receipts sync.WaitGroup
	Stats    Totals
	// Resumed reports that Join restored a checkpoint.
	Resumed bool
}

// Totals accumulates over the run.
type Totals struct {
	Rounds         int
	Samples        int
	PayloadBytes   int64
	AggregateBytes int64
	ComputeSeconds float64
}

// New validates cfg; Run joins and trains.
func New(cfg Config) (*Peer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Poll == 0 {
		cfg.Poll = 200 * time.Millisecond
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	co := cfg.Coordinators
	if co == nil {
		co = ClientCoordinators(cfg.Client)
	}
	return &Peer{cfg: cfg, log: cfg.Logger.With("peer", cfg.Name), co: co}, nil
}

// Join reads the cohort's proposal and builds its model, checks the data against it
// (Config.Bind, Config.Fits), then registers the member (with its contributor names) and joins the cohort
// with their data. Joining twice is harmless.
func (p *Peer) Join(ctx context.Context) error {
	if err := p.setup(ctx); err != nil {
		return err
	}
	if p.cfg.Fits != nil {
		if err := p.cfg.Fits(p.worker.Model()); err != nil {
			return fmt.Errorf("cohort %d: %w", p.cfg.Cohort, err)
		}
	}
	var names []string
	for _, c := range p.cfg.Contributors {
		names = append(names, c.Name)
	}
	if err := p.co.Register(ctx, p.cfg.Name, names); err != nil {
		return fmt.Errorf("register %s: %w", p.cfg.Name, err)
	}
	var data []consensus.ContributorData
	for _, c := range p.cfg.Contributors {
		data = append(data, consensus.ContributorData{Name: c.Name, Fingerprint: c.Fingerprint, Samples: c.Samples})
	}
	sort.Slice(data, func(i, j int) bool { return data[i].Name < data[j].Name })
	if err := p.co.Submit(ctx, &consensus.JoinBody{Cohort: p.cfg.Cohort, Contributors: data}); err != nil && classify(err) != failDuplicate {
		return fmt.Errorf("join cohort %d: %w", p.cfg.Cohort, err)
	}
	return nil
}

func (p *Peer) setup(ctx context.Context) error {
	prop, err := p.co.Proposal(ctx, p.cfg.Cohort)
	if err != nil {
		return fmt.Errorf("cohort %d: %w", p.cfg.Cohort, err)
	}
	p.prop = prop
	ts, err := spec.Of(p.prop)
	if err != nil {
		return err
	}
	h := int(ts.InnerSteps)
	if p.cfg.Overlap >= h {
		return fmt.Errorf("peer: overlap %d steps: the cohort's rounds have %d inner steps, want τ < H", p.cfg.Overlap, h)
	}
	model, err := trainer.NewModel(p.prop.Model, p.cfg.Batch, ts.Seed)
	if err != nil {
		return err
	}
	if p.cfg.Bind != nil {
		src, contributors, err := p.cfg.Bind(model)
		if err != nil {
			return fmt.Errorf("cohort %d: %w", p.cfg.Cohort, err)
		}
		if src == nil || len(contributors) == 0 {
			return fmt.Errorf("peer: cohort %d: binding the data to %s gave no source or no contributors", p.cfg.Cohort, model.Name())
		}
		p.cfg.Source, p.cfg.Contributors = src, contributors
	}
	if p.worker, err = trainer.NewWorker(model, p.cfg.Source, trainer.WorkerConfig{Inner: ts.Inner, Outer: ts.Outer}); err != nil {
		return err
	}
	p.w = replica{p.worker}
	if p.cfg.Worker != nil {
		p.w = p.cfg.Worker(p.w)
	}
	p.fb = feedback{e: make([]float32, len(model.Params())), decay: ts.ErrorDecay, codec: ts.Up, shape: trainer.CodecShape(model.Layout())}
	p.down = ts.Down
	p.st = state{me: p.co.ID(), h: h, rounds: ts.Rounds, tau: p.cfg.Overlap, batch: model.BatchSize()}
	return p.resume()
}

// resume loads the checkpoint, if there is one for this cohort and model.
func (p *Peer) resume() error {
	if p.cfg.Checkpoint == "" {
		return nil
	}
	c, err := trainer.LoadCheckpoint(p.cfg.Checkpoint)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if c.Cohort != p.cfg.Cohort || len(c.Theta) != len(p.fb.e) {
		return fmt.Errorf("checkpoint %s is for cohort %d with %d parameters, not cohort %d with %d", p.cfg.Checkpoint, c.Cohort, len(c.Theta), p.cfg.Cohort, len(p.fb.e))
	}
	if err := p.w.Reset(c.Theta, c.Momentum); err != nil {
		return err
	}
	if err := p.worker.SetInnerState(c.AdamM, c.AdamV, c.AdamT); err != nil {
		return err
	}
	copy(p.fb.e, c.Residual)
	p.st.last = c.Round
	p.Resumed = true
	p.log.Info("resumed from checkpoint", "file", p.cfg.Checkpoint, "round", c.Round)
	return nil
}

// checkpoint saves the peer's state after a round.
func (p *Peer) checkpoint() {
	if p.cfg.Checkpoint == "" {
		return
	}
	m, v, t := p.worker.InnerState()
	c := &trainer.Checkpoint{Cohort: p.cfg.Cohort, Round: p.st.last, Theta: p.worker.Global(), Momentum: p.worker.Momentum(),
		Residual: p.fb.e, AdamM: m, AdamV: v, AdamT: t}
	if err := trainer.SaveCheckpoint(p.cfg.Checkpoint, c); err != nil {
		p.log.Warn("checkpoint", "err", err)
	}
}

// Worker is the peer's DiLoCo worker (its model replica).
func (p *Peer) Worker() *trainer.Worker { return p.worker }

// Run takes part in every round until the cohort is done or ctx ends.
func (p *Peer) Run(ctx context.Context) error {
	if p.worker == nil {
		return errors.New("peer: Run before Join")
	}
	defer p.receipts.Wait()
	for {
		done, err := p.step(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if errors.Is(err, nn.ErrBatch) {
				return fmt.Errorf("the model cannot train on this peer's data: %w", err) // no round will be different
			}
			p.log.Warn("round", "err", err)
		}
		if done {
			return nil
		}
		if err == nil {
			continue // step long-polls: no need to wait here
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(p.cfg.Poll):
		}
	}
}

// step looks at the cohort and takes part in its open round if it has not yet.
// It long-polls a coordinator for the next round, so an idle peer sends one small query per round.
func (p *Peer) step(ctx context.Context) (done bool, err error) {
	c, rounds, err := p.co.NextRound(ctx, p.cfg.Cohort, p.st.last)
	if err != nil {
		return false, err
	}
	v, r, err := p.st.next(c, rounds)
	if err != nil {
		return false, fmt.Errorf("cohort %d: %w", p.cfg.Cohort, err)
	}
	switch v {
	case finish:
		// Finish on the recorded final model even if the last round passed this peer by.
		if differs(protocol.HashParams(p.worker.Global()), c.ModelHash) {
			if err := p.resync(ctx, c.ID, c.ModelHash); err != nil {
				return false, fmt.Errorf("fetching the final model: %w", err)
			}
		}
		return true, nil
	case pollAgain:
		return false, nil
	}
	if err := p.round(ctx, r); err != nil {
		return false, err
	}
	p.stepAhead(ctx, r)
	return false, nil
}

// overlapped is the outcome of the τ steps taken while the update travels.
type overlapped struct {
	st   trainer.InnerStats
	secs float64
	err  error
}

func (p *Peer) round(ctx context.Context, r consensus.Round) error {
	start := time.Now()
	if differs(protocol.HashParams(p.worker.Global()), r.ModelHash) {
		if err := p.resync(ctx, r.Cohort, r.ModelHash); err != nil {
			return fmt.Errorf("round %d: model hash differs and re-sync failed: %w", r.Number, err)
		}
	}
	if p.st.stale(r) {
		p.dropAhead() // taken from a θ this round does not start from
	}
	// The steps taken ahead (while the previous update travelled, and before this round opened)
	// are this round's first steps. The learning rate follows the cohort's step, not this peer's
	// count: round r's steps are (r−1)·H onwards, whenever this peer joined.
	p.worker.SeekStep(max(int(r.Number)-1, 0)*p.st.h + p.st.ahead.steps)
	t0 := time.Now()
	st, err := p.w.InnerSteps(p.st.owed())
	if err != nil {
		p.dropAhead()
		return err
	}
	inRound := time.Since(t0).Seconds()
	st, compute := p.st.trained(st, inRound)
	delta := p.w.Update(r.Number)
	// Overlap: keep training while the update travels and the aggregate comes back.
	var ov chan overlapped
	if tau := p.st.overlap(r); tau > 0 {
		ov = make(chan overlapped, 1)
		p.w.MarkSent()
		go func() {
			t := time.Now()
			st, err := p.w.InnerSteps(tau)
			ov <- overlapped{st, time.Since(t).Seconds(), err}
		}()
	}
	rctx, cancel := context.WithDeadline(ctx, time.UnixMilli(r.Deadline).Add(30*time.Second))
	defer cancel()
	// Slices go to their aggregators in parallel (each is a different coordinator, and the round
	// trips of a slow link add up otherwise); they touch disjoint parts of the exchange and the
	// residual.
	x := newExchange(r)
	k := len(r.Slices)
	agg := make([]float32, len(delta))
	if ctx.Err() == nil {
		forEach(k, func(i int) {
			if err := p.upload(rctx, x, i, delta, uint64(st.Samples), agg); err != nil {
				p.log.Warn("upload", "round", r.Number, "slice", i, "err", err)
				// this slice's residual keeps the whole update for next time
			}
		})
	}
	tUp := time.Now()
	if ctx.Err() == nil {
		forEach(k, func(i int) {
			sl := r.Slices[i]
			if x.answered(i) {
				return // the aggregator answered the upload with the aggregate
			}
			if err := p.fetch(rctx, x, i, agg[sl.Start:sl.End]); err != nil {
				p.log.Warn("aggregate", "round", r.Number, "slice", i, "err", err)
			}
		})
	}
	tFetch := time.Now()
	carry := false
	if ov != nil {
		o := <-ov // τ steps: the worker is ours again
		if o.err == nil {
			carry = true
			p.st.overlapped(o.st, o.secs)
		} else {
			p.log.Warn("overlap steps", "round", r.Number, "err", o.err)
		}
	}
	applied := x.complete()
	var hash [32]byte
	if applied {
		step := p.w.OuterStep
		if carry {
			step = p.w.OuterStepCarry
		}
		if err := step(agg); err != nil {
			p.dropAhead()
			return err
		}
		hash = protocol.HashParams(p.worker.Global())
		p.st.applied(hash)
		// A receipt claims the round's work: only when every slice of the update was accepted. It
		// goes through Raft in the background: the next round's steps need not wait for it.
		if x.receipt() {
			body := &consensus.ReceiptBody{Cohort: r.Cohort, Round: r.Number, SamplesUsed: uint64(st.Samples),
				BytesSent: uint64(x.payload()), ModelHashAfter: hash[:]}
			p.receipts.Go(func() {
				if err := p.co.Submit(ctx, body); err != nil {
					p.log.Warn("receipt", "round", body.Round, "err", err)
				}
			})
		}
	} else {
		// Nothing of this round counts: drop the local progress, and give back to the residual what
		// the uploads carried, so error feedback loses nothing.
		p.dropAhead()
		x.giveBack(&p.fb)
	}
	p.checkpoint()
	rep := p.st.report(r, st, compute, x, applied, hash)
	rep.RoundSeconds = time.Since(start).Seconds()
	p.log.Debug("round timing", "round", r.Number, "since_open", start.Sub(time.UnixMilli(r.OpenedAt)).Seconds(),
		"compute", compute, "upload", tUp.Sub(t0).Seconds()-inRound, "fetch", tFetch.Sub(tUp).Seconds(),
		"finish", time.Since(tFetch).Seconds())
	p.Stats = p.st.totals
	if p.cfg.OnRound != nil {
		p.cfg.OnRound(rep)
	}
	return nil
}

// upload encodes slice i of the update with error feedback and sends it to the slice's aggregator;
// the residual keeps what the message does not carry (or everything, when no aggregator accepts it).
// An aggregator that answers with the slice's aggregate has it decoded into dst (the whole vector's).
func (p *Peer) upload(ctx context.Context, x *exchange, i int, delta []float32, samples uint64, dst []float32) error {
	r, sl := x.r, x.r.Slices[i]
	msg, dec, err := p.fb.encode(r.Number, i, sl, delta[sl.Start:sl.End])
	if err != nil {
		return err
	}
	u := protocol.Upload{Cohort: r.Cohort, Round: r.Number, Slice: i, Start: sl.Start, End: sl.End, Samples: samples}
	to, ans, err := p.send(ctx, r, i, u, msg)
	if err != nil {
		return err
	}
	p.fb.sent(sl, dec)
	x.accepted(i, to, u, msg, dec)
	if ans.ok {
		// The aggregator answered with the aggregate: nothing to fetch. One it cannot decode is
		// fetched again.
		if err := p.take(x, i, ans.rep, ans.agg, dst[sl.Start:sl.End]); err != nil {
			p.log.Warn("aggregate", "round", r.Number, "slice", i, "err", err)
		}
	}
	return nil
}

// answer is what an aggregator answered an upload with: the slice's aggregate when ok.
type answer struct {
	rep protocol.AggregateReply
	agg []byte
	ok  bool
}

// take decodes slice i's aggregate into dst and records it received (abandoned: nothing to
// decode, and the exchange is not complete).
func (p *Peer) take(x *exchange, i int, rep protocol.AggregateReply, payload []byte, dst []float32) error {
	if rep.Aborted {
		x.aborted(i)
		return nil
	}
	sl := x.r.Slices[i]
	if err := spec.DecodeAggregate(p.down, p.fb.shape, int(sl.Start), int(sl.End), payload, dst); err != nil {
		return err
	}
	x.received(i, len(payload))
	return nil
}

// fetch long-polls slice i's aggregator for the aggregate and decodes it into dst. It returns nil
// without the aggregate when the round was abandoned. When the aggregator does not answer it looks
// at the round again: the leader may have moved the slice to another coordinator (then the upload
// is resent there), or closed the round.
func (p *Peer) fetch(ctx context.Context, x *exchange, i int, dst []float32) error {
	r := x.r
	q := protocol.AggregateRequest{Cohort: r.Cohort, Round: r.Number, Slice: i}
	for {
		rep, payload, err := p.co.Aggregate(ctx, x.fetchFrom(i), q)
		if err == nil {
			return p.take(x, i, rep, payload, dst)
		}
		if ctx.Err() != nil || classify(err) != failRetry {
			return err
		}
		if errors.Is(err, protocol.ErrNotReady) {
			// The aggregator answered after holding the poll (protocol.AggregateWait): it is alive
			// and still has the slice (else ErrNotAggregator); ask again at once.
			continue
		}
		if now, ok := p.roundNow(ctx, r); ok {
			abandoned, err := x.closed(now)
			if err != nil {
				return err
			}
			if abandoned {
				return nil
			}
			if x.follow(i, now) {
				// The slice moved to another coordinator (consensus.Reassign): send it this slice's
				// update again, then ask it for the aggregate.
				u, msg := x.sent(i)
				if to, ans, err := p.send(ctx, now, i, u, msg); err == nil {
					x.resent(i, to)
					if ans.ok {
						return p.take(x, i, ans.rep, ans.agg, dst)
					}
				} else {
					p.log.Warn("resend to the new aggregator", "round", r.Number, "slice", i, "err", err)
				}
			}
		}
		select { // the aggregator is down or the aggregate not ready: try again
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(retryWait):
		}
	}
}

// retryWait is the pause before another try at an aggregator.
const retryWait = 500 * time.Millisecond

// send delivers a slice's upload to the slice's aggregator as the round currently records it:
// when the aggregator does not answer, it looks at the round again (the leader may have moved the
// slice to another coordinator) and retries until the round closes or ctx ends. It returns the
// aggregator that accepted the upload, and the aggregate if that aggregator answered with it.
func (p *Peer) send(ctx context.Context, r consensus.Round, i int, u protocol.Upload, msg []byte) (string, answer, error) {
	agg := r.Slices[i].Aggregator
	for {
		rep, payload, ok, err := p.co.Upload(ctx, agg, u, msg)
		if err == nil {
			return agg, answer{rep, payload, ok}, nil
		}
		switch classify(err) {
		case failDuplicate:
			return agg, answer{}, nil // a resend the aggregator had: it counts once
		case failFinal:
			return "", answer{}, err
		}
		if ctx.Err() != nil {
			return "", answer{}, err
		}
		select {
		case <-ctx.Done():
			return "", answer{}, err
		case <-time.After(retryWait):
		}
		x, ok := p.roundNow(ctx, r)
		if !ok {
			// No coordinator answers for the round now — a leader change, most often, when the
			// aggregator that died was the leader: try the same aggregator again (ctx bounds it).
			continue
		}
		if x.Status != consensus.RoundOpen {
			return "", answer{}, fmt.Errorf("round %d closed while sending slice %d: %w", r.Number, i, err)
		}
		agg = x.Slices[i].Aggregator
	}
}

// roundNow reads round r as the coordinators record it now.
func (p *Peer) roundNow(ctx context.Context, r consensus.Round) (consensus.Round, bool) {
	x, err := p.co.Round(ctx, r.Cohort, r.Number)
	if err != nil || x.Number != r.Number || len(x.Slices) != len(r.Slices) {
		return consensus.Round{}, false
	}
	return x, true
}

// resync fetches θ and the outer momentum of the model with the given hash.
func (p *Peer) resync(ctx context.Context, cohort uint64, hash []byte) error {
	theta, momentum, err := p.co.Model(ctx, cohort, hash, len(p.worker.Global()))
	if err != nil {
		return err
	}
	if differs(protocol.HashParams(theta), hash) {
		return fmt.Errorf("%w: the model fetched hashes otherwise", protocol.ErrWrongModel)
	}
	if err := p.w.Reset(theta, momentum); err != nil {
		return err
	}
	p.fb.reset()
	p.log.Info("fetched model", "cohort", cohort, "hash", fmt.Sprintf("%x", hash[:min(len(hash), 8)]))
	return nil
}

// dropAhead forgets the steps taken ahead: the local model restarts from θ_t.
func (p *Peer) dropAhead() {
	if n := p.st.dropAhead(); n > 0 {
		p.log.Debug("dropping steps taken ahead", "steps", n)
	}
	p.w.Discard()
}

// stepAhead takes the rest of the next round's H inner steps now, before the leader opens it
// (state.stepsAhead): if it opens from another θ they are dropped.
func (p *Peer) stepAhead(ctx context.Context, r consensus.Round) {
	if ctx.Err() != nil {
		return
	}
	n := p.st.stepsAhead(r, protocol.HashParams(p.worker.Global()))
	if n == 0 {
		return
	}
	t := time.Now()
	st, err := p.w.InnerSteps(n)
	if err != nil {
		p.log.Warn("steps ahead", "round", r.Number+1, "err", err)
		p.dropAhead()
		return
	}
	p.st.tookAhead(st, time.Since(t).Seconds())
}

// forEach runs f(0..n-1) concurrently and waits.
func forEach(n int, f func(i int)) {
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Go(func() { f(i) })
	}
	wg.Wait()
}

// Contributors are the contributors the peer registers (after Join: as Config.Bind made them).
func (p *Peer) Contributors() []Contributor { return p.cfg.Contributors }
