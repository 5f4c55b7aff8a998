// Package peer is a cohort member's training process (`cohort join`): it joins a cohort with its
// contributors' data, and for every round the coordinators open it trains H inner steps from θ_t,
// sends each slice of its compressed pseudo-gradient (with error feedback) to that slice's
// aggregator over QUIC, fetches the aggregated slices, applies the outer step — staying
// bit-identical with every other replica — and reports a signed receipt.
//
// A peer never aggregates for others and never sees other peers' updates. It talks
// to the coordinators through a client.Client: consensus commands are signed envelopes, data
// plane messages are protocol messages on the same mutually authenticated QUIC connections.
package peer

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/cohortlab/cohort/client"
	"github.com/cohortlab/cohort/compress"
	"github.com/cohortlab/cohort/consensus"
	"github.com/cohortlab/cohort/protocol"
	"github.com/cohortlab/cohort/spec"
	"github.com/cohortlab/cohort/trainer"
	"github.com/cohortlab/cohort/trainer/nn"
	"github.com/cohortlab/cohort/transport"
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
	// Client is the member's connection to the coordinators. Required.
	Client *client.Client
	// Cohort to join. Required.
	Cohort uint64
	// Contributors whose data Source draws from. Required.
	Contributors []Contributor
	// Source yields the training batches. Required.
	Source trainer.Source
	// Fits, if set, reports whether Source's data suits the cohort's model (ImagesFit for image
	// shards). Join calls it with the model the cohort's proposal names before it registers the
	// member or submits the join: data the model cannot train on is refused before anything is
	// committed, rather than failing every round after.
	Fits func(model nn.Model) error
	// Batch is the inner batch size; zero means the model's default.
	Batch int
	// Inner configures the inner AdamW.
	Inner trainer.AdamWConfig
	// Poll is how long the peer waits after a failed check for a new round; zero means 200ms.
	Poll time.Duration
	// Logger; nil means slog.Default().
	Logger *slog.Logger
	// OnRound, if set, is called after every round the peer took part in.
	OnRound func(Report)
	// Checkpoint, if set, is a file the peer saves its replica, residual and optimizer state to after
	// every round, and resumes from when it starts again.
	Checkpoint string
	// Late makes the peer send its updates just after each round's upload deadline (fault injection
	// for simulations): they are refused, it earns nothing, and it still follows the model.
	Late bool
	// Overlap is τ, the inner steps the peer takes while its update travels and the aggregate comes
	// back (0 ≤ τ < H): communication overlaps compute. They are carried onto θ_{t+1}
	// (trainer.Worker.OuterStepCarry) and count towards the next round's H. Zero means none: the
	// peer idles while it waits for the aggregate. The global replica is the same either way.
	Overlap int
	// Tamper, if set, replaces the pseudo-gradient before it is encoded: fault injection for
	// simulations of dishonest peers. prev is the aggregate applied in the previous round this
	// peer took part in (nil before the first).
	Tamper func(round uint32, delta, prev []float32) []float32
}

// Report describes one round of this peer.
type Report struct {
	Round          uint32
	Rounds         uint32
	Applied        bool // false: the round was abandoned, or this peer was late
	TrainLoss      float64
	Samples        int
	PayloadBytes   int // encoded update bytes uploaded this round
	ComputeSeconds float64
	RoundSeconds   float64
	ModelHash      [32]byte
}

// Peer is one member training in a cohort.
type Peer struct {
	cfg    Config
	log    *slog.Logger
	cl     *client.Client
	prop   consensus.Proposal
	worker *trainer.Worker
	resid  []float32 // error feedback: what earlier messages did not carry
	decay  float32   // error-feedback decay β: the residual becomes β·e + Δ before each message
	codec  compress.Setting
	down   compress.Setting // codec of the aggregates coming down
	shape  compress.Shape
	addrMu sync.Mutex
	addrs  map[string]string // coordinator key ID → address
	// sentDec holds this round's decoded uploads per slice, given back to the residual if the round
	// is abandoned.
	sentDec map[int][]float32
	last    uint32
	prevAgg []float32
	sentMu  sync.Mutex
	sent    map[int]sentSlice // this round's accepted uploads by slice
	// ahead is the inner steps already taken towards the next round (the overlap carried onto
	// θ_{t+1}, then the rest of H taken before that round opened), from the θ whose hash is
	// aheadOf; aheadLoss, aheadSecs sum their losses and time.
	ahead     int
	aheadOf   [32]byte
	aheadLoss float64
	aheadSecs float64
	receipts  sync.WaitGroup
	Stats     Totals
	// Resumed reports that Join restored a checkpoint.
	Resumed bool
}

// Totals accumulates over the run.
type Totals struct {
	Rounds         int
	Samples        int
	PayloadBytes   int64
	ComputeSeconds float64
}

// New validates cfg; Run joins and trains.
func New(cfg Config) (*Peer, error) {
	switch {
	case cfg.Name == "":
		return nil, errors.New("peer: no member name")
	case cfg.Client == nil:
		return nil, errors.New("peer: no coordinator client")
	case cfg.Cohort == 0:
		return nil, errors.New("peer: no cohort")
	case len(cfg.Contributors) == 0:
		return nil, errors.New("peer: no contributors")
	case cfg.Source == nil:
		return nil, errors.New("peer: no data")
	case cfg.Overlap < 0:
		return nil, fmt.Errorf("peer: overlap %d steps: want ≥ 0", cfg.Overlap)
	}
	if cfg.Poll == 0 {
		cfg.Poll = 200 * time.Millisecond
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Peer{cfg: cfg, log: cfg.Logger.With("peer", cfg.Name), cl: cfg.Client, addrs: map[string]string{}}, nil
}

// Join reads the cohort's proposal and builds its model, checks the data against it
// (Config.Fits), then registers the member (with its contributor names) and joins the cohort
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
	if err := p.cl.EnsureRegistered(ctx, p.cfg.Name, names); err != nil {
		return fmt.Errorf("register %s: %w", p.cfg.Name, err)
	}
	var data []consensus.ContributorData
	for _, c := range p.cfg.Contributors {
		data = append(data, consensus.ContributorData{Name: c.Name, Fingerprint: c.Fingerprint, Samples: c.Samples})
	}
	sort.Slice(data, func(i, j int) bool { return data[i].Name < data[j].Name })
	_, err := p.cl.Submit(ctx, &consensus.JoinBody{Cohort: p.cfg.Cohort, Contributors: data})
	if err != nil && !errors.Is(err, consensus.ErrExists) {
		return fmt.Errorf("join cohort %d: %w", p.cfg.Cohort, err)
	}
	return nil
}

func (p *Peer) setup(ctx context.Context) error {
	r, err := p.cl.Query(ctx, protocol.Query{What: protocol.QueryCohort, ID: p.cfg.Cohort})
	if err != nil {
		return fmt.Errorf("cohort %d: %w", p.cfg.Cohort, err)
	}
	if r.Cohort == nil {
		return fmt.Errorf("cohort %d: empty answer", p.cfg.Cohort)
	}
	pr, err := p.cl.Query(ctx, protocol.Query{What: protocol.QueryProposal, ID: r.Cohort.Proposal})
	if err != nil {
		return fmt.Errorf("cohort %d: proposal %d: %w", p.cfg.Cohort, r.Cohort.Proposal, err)
	}
	if len(pr.Proposals) != 1 {
		return fmt.Errorf("cohort %d: proposal %d: %d answers", p.cfg.Cohort, r.Cohort.Proposal, len(pr.Proposals))
	}
	p.prop = pr.Proposals[0]
	if h := int(p.prop.Params.InnerSteps); p.cfg.Overlap >= h {
		return fmt.Errorf("peer: overlap %d steps: the cohort's rounds have %d inner steps, want τ < H", p.cfg.Overlap, h)
	}
	ts, err := spec.Of(p.prop)
	if err != nil {
		return err
	}
	model, err := trainer.NewModel(p.prop.Model, p.cfg.Batch, ts.Seed)
	if err != nil {
		return err
	}
	if p.worker, err = trainer.NewWorker(model, p.cfg.Source, trainer.WorkerConfig{Inner: p.cfg.Inner, Outer: ts.Outer}); err != nil {
		return err
	}
	p.codec, p.down, p.decay = ts.Up, ts.Down, ts.ErrorDecay
	p.shape = trainer.CodecShape(model.Layout())
	p.resid = make([]float32, len(model.Params()))
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
	if c.Cohort != p.cfg.Cohort || len(c.Theta) != len(p.resid) {
		return fmt.Errorf("checkpoint %s is for cohort %d with %d parameters, not cohort %d with %d", p.cfg.Checkpoint, c.Cohort, len(c.Theta), p.cfg.Cohort, len(p.resid))
	}
	if err := p.worker.Reset(c.Theta, c.Momentum); err != nil {
		return err
	}
	if err := p.worker.SetInnerState(c.AdamM, c.AdamV, c.AdamT); err != nil {
		return err
	}
	copy(p.resid, c.Residual)
	p.last = c.Round
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
	c := &trainer.Checkpoint{Cohort: p.cfg.Cohort, Round: p.last, Theta: p.worker.Global(), Momentum: p.worker.Momentum(),
		Residual: p.resid, AdamM: m, AdamV: v, AdamT: t}
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
	q, err := p.cl.Query(ctx, protocol.Query{What: protocol.QueryNextRound, ID: p.cfg.Cohort, After: p.last})
	if err != nil {
		return false, err
	}
	c := q.Cohort
	if c == nil {
		return false, fmt.Errorf("cohort %d: the coordinator's answer holds no cohort", p.cfg.Cohort)
	}
	if c.Status == consensus.CohortDone {
		// Finish on the recorded final model even if the last round passed this peer by.
		if got := protocol.HashParams(p.worker.Global()); !bytes.Equal(got[:], c.ModelHash) {
			if err := p.resync(ctx, c.ID, c.ModelHash); err != nil {
				return false, fmt.Errorf("fetching the final model: %w", err)
			}
		}
		return true, nil
	}
	if c.CurrentRound == 0 || c.CurrentRound <= p.last || len(q.Rounds) == 0 {
		return false, nil
	}
	r := q.Rounds[0]
	p.last = r.Number // whatever happens, this round is seen: the next poll waits for a newer one
	if r.Status != consensus.RoundOpen {
		return false, nil // closed before we saw it: catch up at the next
	}
	me := p.cl.ID()
	if i := sort.SearchStrings(r.Participants, me); i == len(r.Participants) || r.Participants[i] != me {
		return false, nil // joined after the round opened: wait for the next
	}
	if err := p.round(ctx, r); err != nil {
		return false, err
	}
	p.stepAhead(ctx, r)
	return false, nil
}

func (p *Peer) round(ctx context.Context, r consensus.Round) error {
	start := time.Now()
	if got := protocol.HashParams(p.worker.Global()); !bytes.Equal(got[:], r.ModelHash) {
		if err := p.resync(ctx, r.Cohort, r.ModelHash); err != nil {
			return fmt.Errorf("round %d: model hash differs and re-sync failed: %w", r.Number, err)
		}
	}
	h := int(p.prop.Params.InnerSteps)
	if p.ahead > 0 && !bytes.Equal(p.aheadOf[:], r.ModelHash) {
		p.dropAhead() // taken from a θ this round does not start from
	}
	// The steps taken ahead (while the previous update travelled, and before this round opened)
	// are this round's first steps.
	t0 := time.Now()
	st, err := p.worker.InnerSteps(h - p.ahead)
	if err != nil {
		p.dropAhead()
		return err
	}
	inRound := time.Since(t0).Seconds()
	compute := inRound + p.aheadSecs
	bs := p.worker.Model().BatchSize()
	st.MeanLoss = (st.MeanLoss*float64(st.Steps) + p.aheadLoss) / float64(h)
	st.Samples += p.ahead * bs
	st.Steps += p.ahead
	p.ahead, p.aheadLoss, p.aheadSecs = 0, 0, 0
	delta := p.worker.PseudoGradient(nil)
	if p.cfg.Tamper != nil {
		delta = p.cfg.Tamper(r.Number, delta, p.prevAgg)
	}
	// Overlap: keep training while the update travels and the aggregate comes back. The last round
	// has nothing to carry the steps to.
	type overlapped struct {
		st   trainer.InnerStats
		secs float64
		err  error
	}
	var ov chan overlapped
	if tau := p.cfg.Overlap; tau > 0 && r.Number < p.prop.Params.Rounds {
		ov = make(chan overlapped, 1)
		p.worker.MarkSent()
		go func() {
			t := time.Now()
			st, err := p.worker.InnerSteps(tau)
			ov <- overlapped{st, time.Since(t).Seconds(), err}
		}()
	}
	if p.cfg.Late {
		r = p.waitLate(ctx, r)
	}
	rctx, cancel := context.WithDeadline(ctx, time.UnixMilli(r.Deadline).Add(30*time.Second))
	defer cancel()
	// Slices go to their aggregators in parallel (each is a different coordinator, and the round
	// trips of a slow link add up otherwise); they touch disjoint ranges of the residual.
	for _, sl := range r.Slices {
		if _, err := p.addrOf(rctx, sl.Aggregator); err != nil {
			p.log.Warn("aggregator address", "round", r.Number, "err", err)
		}
	}
	k := len(r.Slices)
	p.sentMu.Lock()
	p.sent = map[int]sentSlice{}
	p.sentMu.Unlock()
	sizes, decs, upErrs := make([]int, k), make([][]float32, k), make([]error, k)
	if ctx.Err() == nil {
		forEach(k, func(i int) {
			sl := r.Slices[i]
			sizes[i], decs[i], upErrs[i] = p.upload(rctx, r, i, sl, delta[sl.Start:sl.End], uint64(st.Samples))
		})
	}
	tUp := time.Now()
	sent, accepted := 0, 0
	p.sentDec = map[int][]float32{}
	for i, err := range upErrs {
		if err != nil {
			p.log.Warn("upload", "round", r.Number, "slice", i, "err", err)
			continue // this slice's residual keeps the whole update for next time
		}
		sent += sizes[i]
		accepted++
		p.sentDec[i] = decs[i]
	}
	agg := make([]float32, len(delta))
	oks, fetchErrs := make([]bool, k), make([]error, k)
	if ctx.Err() == nil {
		forEach(k, func(i int) {
			sl := r.Slices[i]
			oks[i], fetchErrs[i] = p.fetch(rctx, r, i, sl, agg[sl.Start:sl.End])
		})
	}
	tFetch := time.Now()
	applied := true
	for i := range oks {
		if fetchErrs[i] != nil {
			p.log.Warn("aggregate", "round", r.Number, "slice", i, "err", fetchErrs[i])
		}
		applied = applied && oks[i]
	}
	carry := false
	if ov != nil {
		o := <-ov // τ steps: the worker is ours again
		if o.err == nil {
			carry = true
			p.ahead, p.aheadLoss, p.aheadSecs = o.st.Steps, o.st.MeanLoss*float64(o.st.Steps), o.secs
		} else {
			p.log.Warn("overlap steps", "round", r.Number, "err", o.err)
		}
	}
	rep := Report{Round: r.Number, Rounds: p.prop.Params.Rounds, TrainLoss: st.MeanLoss, Samples: st.Samples,
		PayloadBytes: sent, ComputeSeconds: compute}
	if applied {
		step := p.worker.OuterStep
		if carry {
			step = p.worker.OuterStepCarry
		}
		if err := step(agg); err != nil {
			p.dropAhead()
			return err
		}
		p.prevAgg = agg
		rep.Applied = true
		rep.ModelHash = protocol.HashParams(p.worker.Global())
		p.aheadOf = rep.ModelHash
		// A receipt claims the round's work: only when every slice of the update was accepted. It
		// goes through Raft in the background: the next round's steps need not wait for it.
		if accepted == len(r.Slices) {
			body := &consensus.ReceiptBody{Cohort: r.Cohort, Round: r.Number, SamplesUsed: uint64(st.Samples),
				BytesSent: uint64(sent), ModelHashAfter: rep.ModelHash[:]}
			p.receipts.Add(1)
			go func() {
				defer p.receipts.Done()
				if _, err := p.cl.Submit(ctx, body); err != nil {
					p.log.Warn("receipt", "round", body.Round, "err", err)
				}
			}()
		}
	} else {
		// Nothing of this round counts: drop the local progress, and give back to the residual what
		// the uploads carried, so error feedback loses nothing.
		p.dropAhead()
		for i, dec := range p.sentDec {
			sl := r.Slices[i]
			e := p.resid[sl.Start:sl.End]
			for j, v := range dec {
				e[j] += v
			}
		}
	}
	p.checkpoint()
	rep.RoundSeconds = time.Since(start).Seconds()
	p.log.Debug("round timing", "round", r.Number, "since_open", start.Sub(time.UnixMilli(r.OpenedAt)).Seconds(),
		"compute", compute, "upload", tUp.Sub(t0).Seconds()-inRound, "fetch", tFetch.Sub(tUp).Seconds(),
		"finish", time.Since(tFetch).Seconds())
	p.Stats.Rounds++
	p.Stats.Samples += st.Samples
	p.Stats.PayloadBytes += int64(sent)
	p.Stats.ComputeSeconds += compute
	if p.cfg.OnRound != nil {
		p.cfg.OnRound(rep)
	}
	return nil
}

// upload encodes β·e[s] + Δ[s] with the cohort's codec and sends it to the slice's aggregator; the
// residual keeps what the message does not carry (or everything, when the upload fails).
func (p *Peer) upload(ctx context.Context, r consensus.Round, i int, sl consensus.SliceAssignment, delta []float32, samples uint64) (int, []float32, error) {
	e := p.resid[sl.Start:sl.End]
	compress.Accumulate(e, e, delta, p.decay)
	codec, err := compress.New(compress.Config{Setting: p.codec, Shape: p.shape.Slice(int(sl.Start), int(sl.End)), Seed: uint64(r.Number)<<20 | uint64(i)})
	if err != nil {
		return 0, nil, err
	}
	msg, err := codec.Encode(nil, e)
	if err != nil {
		return 0, nil, err
	}
	req := transport.Message{Header: transport.Header{Type: protocol.MsgUpload}, Payload: msg}
	if err := req.SetBody(protocol.Upload{Cohort: r.Cohort, Round: r.Number, Slice: i, Start: sl.Start, End: sl.End, Samples: samples}); err != nil {
		return 0, nil, err
	}
	to, err := p.send(ctx, r, i, req)
	if err != nil {
		return 0, nil, err
	}
	p.sentMu.Lock()
	p.sent[i] = sentSlice{req: req, to: to}
	p.sentMu.Unlock()
	dec, err := codec.Decode(nil, msg)
	if err != nil {
		return 0, nil, err
	}
	for j, v := range dec {
		e[j] -= v
	}
	return len(msg), dec, nil
}

// fetch long-polls the slice's aggregator for the aggregate; false means the round was abandoned.
func (p *Peer) fetch(ctx context.Context, r consensus.Round, i int, sl consensus.SliceAssignment, dst []float32) (bool, error) {
	req := transport.Message{Header: transport.Header{Type: protocol.MsgAggregate}}
	if err := req.SetBody(protocol.AggregateRequest{Cohort: r.Cohort, Round: r.Number, Slice: i}); err != nil {
		return false, err
	}
	agg := sl.Aggregator
	p.sentMu.Lock()
	if sent, ok := p.sent[i]; ok {
		agg = sent.to
	}
	p.sentMu.Unlock()
	for {
		addr, err := p.addrOf(ctx, agg)
		if err != nil {
			return false, err
		}
		actx, cancel := context.WithTimeout(ctx, attemptTimeout)
		reply, err := p.cl.CallAt(actx, addr, req)
		cancel()
		if err == nil {
			var rep protocol.AggregateReply
			if err := reply.DecodeBody(&rep); err != nil {
				return false, err
			}
			if rep.Aborted {
				return false, nil
			}
			err := spec.DecodeAggregate(p.down, p.shape, int(sl.Start), int(sl.End), reply.Payload, dst)
			return err == nil, err
		}
		if ctx.Err() != nil {
			return false, err
		}
		if !retryable(err) {
			return false, err
		}
		// The aggregator may be gone: the leader moves its slice to another coordinator, or, if
		// it closed the round meanwhile with θ unchanged, the round was abandoned.
		x, ok := p.roundNow(ctx, r)
		if !ok {
			x, ok = p.roundIn(ctx, r) // a newer round opened meanwhile
		}
		if ok && x.Status == consensus.RoundClosed {
			if bytes.Equal(x.NewModelHash, r.ModelHash) {
				return false, nil
			}
			return false, fmt.Errorf("round %d closed before its aggregate reached this peer", r.Number)
		}
		if ok && x.Slices[i].Aggregator != agg {
			// The slice moved to another coordinator (consensus.Reassign): send it this slice's
			// update again, then ask it for the aggregate.
			agg = x.Slices[i].Aggregator
			p.sentMu.Lock()
			sent, had := p.sent[i]
			p.sentMu.Unlock()
			if had && sent.to != agg {
				if to, err := p.send(ctx, x, i, sent.req); err == nil {
					p.sentMu.Lock()
					p.sent[i] = sentSlice{req: sent.req, to: to}
					p.sentMu.Unlock()
					agg = to
				} else {
					p.log.Warn("resend to the new aggregator", "round", r.Number, "slice", i, "err", err)
				}
			}
		}
		select { // the aggregator is down or the aggregate not ready: try again
		case <-ctx.Done():
			return false, ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// attemptTimeout bounds one long-poll for an aggregate, and sendTimeout one upload of a slice (a
// few KB to a few hundred): a connection to a coordinator that died does not fail by itself before
// QUIC's idle timeout, and a moved slice must reach its new aggregator before the upload deadline.
// Between long-polls the peer looks at the round again. (With 15 s long-polls, peers waiting on
// a SIGKILLed leader's slice learnt of its move too late to resend it, and the process end-to-end
// test's leader-kill round closed before its aggregate reached them.)
const (
	attemptTimeout = 3 * time.Second
	sendTimeout    = 5 * time.Second
)

// sentSlice is a slice's upload this round and the aggregator that accepted it.
type sentSlice struct {
	req transport.Message
	to  string
}

// send delivers a slice's upload to the slice's aggregator as the round currently records it:
// when the aggregator does not answer, it looks at the round again (the leader may have moved the
// slice to another coordinator) and retries until the round closes or ctx ends. It returns the
// aggregator that accepted the upload.
func (p *Peer) send(ctx context.Context, r consensus.Round, i int, req transport.Message) (string, error) {
	agg := r.Slices[i].Aggregator
	for {
		if p.cfg.Late {
			r = p.waitLate(ctx, r)
		}
		addr, err := p.addrOf(ctx, agg)
		if err == nil {
			actx, cancel := context.WithTimeout(ctx, sendTimeout)
			_, err = p.cl.CallAt(actx, addr, req)
			cancel()
			if err == nil {
				return agg, nil
			}
		}
		if errors.Is(err, protocol.ErrDuplicate) {
			return agg, nil // a resend the aggregator had: it counts once
		}
		if !retryable(err) || ctx.Err() != nil {
			return "", err
		}
		select {
		case <-ctx.Done():
			return "", err
		case <-time.After(500 * time.Millisecond):
		}
		x, ok := p.roundNow(ctx, r)
		if !ok || x.Status != consensus.RoundOpen {
			return "", fmt.Errorf("round %d closed while sending slice %d: %w", r.Number, i, err)
		}
		agg = x.Slices[i].Aggregator
	}
}

// waitLate (fault injection, Config.Late) waits until just past round r's upload deadline as the
// round records it then — a new leader may have moved it (consensus.Reassign), and the
// aggregators follow it — and returns the round as last read.
func (p *Peer) waitLate(ctx context.Context, r consensus.Round) consensus.Round {
	for ctx.Err() == nil {
		select {
		case <-time.After(time.Until(time.UnixMilli(protocol.UploadDeadline(r.OpenedAt, r.Deadline)).Add(500 * time.Millisecond))):
		case <-ctx.Done():
		}
		x, ok := p.roundNow(ctx, r)
		if !ok || x.Status != consensus.RoundOpen || x.Deadline == r.Deadline {
			break
		}
		r = x
	}
	return r
}

// retryable reports whether an aggregator call failed in a way worth trying again (after looking
// at the round): the aggregator did not answer, was not ready, or no longer aggregates the slice.
func retryable(err error) bool {
	return client.Retryable(err) || errors.Is(err, protocol.ErrNotAggregator)
}

// roundNow reads round r as the coordinators record it now.
func (p *Peer) roundNow(ctx context.Context, r consensus.Round) (consensus.Round, bool) {
	qctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	q, err := p.cl.Query(qctx, protocol.Query{What: protocol.QueryNextRound, ID: r.Cohort, After: r.Number - 1})
	if err != nil || len(q.Rounds) == 0 || q.Rounds[0].Number != r.Number || len(q.Rounds[0].Slices) != len(r.Slices) {
		return consensus.Round{}, false
	}
	return q.Rounds[0], true
}

// roundIn reads round r from the cohort's rounds (when it is no longer the latest).
func (p *Peer) roundIn(ctx context.Context, r consensus.Round) (consensus.Round, bool) {
	qr, err := p.cl.Query(ctx, protocol.Query{What: protocol.QueryRounds, ID: r.Cohort})
	if err != nil {
		return consensus.Round{}, false
	}
	for _, x := range qr.Rounds {
		if x.Number == r.Number && len(x.Slices) == len(r.Slices) {
			return x, true
		}
	}
	return consensus.Round{}, false
}

// resync fetches θ and the outer momentum from a coordinator whose replica has the given hash.
func (p *Peer) resync(ctx context.Context, cohort uint64, hash []byte) error {
	st, err := p.cl.Query(ctx, protocol.Query{What: protocol.QueryStatus})
	if err != nil {
		return err
	}
	req := transport.Message{Header: transport.Header{Type: protocol.MsgModel}}
	if err := req.SetBody(protocol.ModelRequest{Cohort: cohort}); err != nil {
		return err
	}
	n := len(p.worker.Global())
	var last error = errors.New("no coordinator")
	if st.Status == nil {
		return errors.New("the coordinator's status answer is empty")
	}
	for _, sv := range st.Status.Servers {
		reply, err := p.cl.CallAt(ctx, sv.Addr, req)
		if err != nil {
			last = err
			continue
		}
		var mr protocol.ModelReply
		if err := reply.DecodeBody(&mr); err != nil || mr.Params != n || !bytes.Equal(mr.Hash, hash) || len(mr.Root) != len(transport.Hash{}) {
			last = fmt.Errorf("%s has round %d of the model, not the one wanted (%x)", sv.ID, mr.Round, hash[:min(len(hash), 8)])
			continue
		}
		blob, err := p.cl.FetchBlob(ctx, sv.Addr, transport.Hash(mr.Root), int64(8*n), 0)
		if err != nil {
			last = fmt.Errorf("fetching the model from %s: %w", sv.ID, err)
			continue
		}
		both, err := protocol.DecodeFloats(nil, blob, 2*n)
		if err != nil {
			last = err
			continue
		}
		if h := protocol.HashParams(both[:n]); !bytes.Equal(h[:], hash) {
			last = fmt.Errorf("%s sent a model whose hash does not match", sv.ID)
			continue
		}
		if err := p.worker.Reset(both[:n], both[n:]); err != nil {
			return err
		}
		clear(p.resid)
		p.log.Info("fetched model", "round", mr.Round, "from", sv.ID)
		return nil
	}
	return last
}

// dropAhead forgets the steps taken ahead: the local model restarts from θ_t.
func (p *Peer) dropAhead() {
	if p.ahead > 0 {
		p.log.Debug("dropping steps taken ahead", "steps", p.ahead)
	}
	p.worker.Discard()
	p.ahead, p.aheadLoss, p.aheadSecs = 0, 0, 0
}

// stepAhead takes the rest of the next round's H inner steps now, before the leader opens it
// (receipts, closing the round, scoring and opening the next go through Raft meanwhile). They are
// the same steps the round would take after it opened, from the same θ: if it opens from another θ
// they are dropped.
func (p *Peer) stepAhead(ctx context.Context, r consensus.Round) {
	h := int(p.prop.Params.InnerSteps)
	if r.Number >= p.prop.Params.Rounds || p.ahead >= h || ctx.Err() != nil {
		return
	}
	if got := protocol.HashParams(p.worker.Global()); got != p.aheadOf {
		return // the round was not applied here
	}
	t := time.Now()
	st, err := p.worker.InnerSteps(h - p.ahead)
	if err != nil {
		p.log.Warn("steps ahead", "round", r.Number+1, "err", err)
		p.dropAhead()
		return
	}
	p.ahead += st.Steps
	p.aheadLoss += st.MeanLoss * float64(st.Steps)
	p.aheadSecs += time.Since(t).Seconds()
}

// forEach runs f(0..n-1) concurrently and waits.
func forEach(n int, f func(i int)) {
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Go(func() { f(i) })
	}
	wg.Wait()
}

// addrOf resolves an aggregator's key ID to its address.
func (p *Peer) addrOf(ctx context.Context, keyID string) (string, error) {
	p.addrMu.Lock()
	defer p.addrMu.Unlock()
	if a, ok := p.addrs[keyID]; ok {
		return a, nil
	}
	st, err := p.cl.Query(ctx, protocol.Query{What: protocol.QueryStatus})
	if err != nil {
		return "", err
	}
	if st.Status == nil {
		return "", errors.New("the coordinator's status answer is empty")
	}
	byName := map[string]string{}
	for _, sv := range st.Status.Servers {
		byName[sv.ID] = sv.Addr
	}
	for _, c := range st.Status.Coordinators {
		name, id, _ := strings.Cut(c, "=")
		if a, ok := byName[name]; ok {
			p.addrs[id] = a
		}
	}
	if a, ok := p.addrs[keyID]; ok {
		return a, nil
	}
	return "", fmt.Errorf("aggregator %s has no known address", keyID)
}
