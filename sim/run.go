package sim

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"errors"
	"fmt"
	"github.com/cohortlab/cohort/client"
	"log/slog"
	"math"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/cohortlab/cohort/consensus"
	"github.com/cohortlab/cohort/coordinator"
	"github.com/cohortlab/cohort/internal/netutil"
	"github.com/cohortlab/cohort/peer"
	"github.com/cohortlab/cohort/protocol"
	"github.com/cohortlab/cohort/spec"
	"github.com/cohortlab/cohort/trainer"
	"github.com/cohortlab/cohort/transport"
	"github.com/cohortlab/cohort/transport/linkshape"
)

func identity(seed uint64, name string) (*transport.Identity, error) {
	s := sha256.Sum256([]byte(fmt.Sprintf("cohort-sim/%d/%s", seed, name)))
	return transport.NewIdentity(ed25519.NewKeyFromSeed(s[:]))
}

type node struct {
	srv    *coordinator.Server
	cancel context.CancelFunc
	done   chan struct{}
	dead   bool
}

type member struct {
	name    string
	client  *client.Client
	peer    *peer.Peer
	cancel  context.CancelFunc
	done    chan struct{}
	rounds  int
	stopped bool
	bad     *BadPeer
}

// Run runs the simulation to its last round and returns the summary.
func Run(ctx context.Context, cfg Config) (*Summary, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	log := cfg.Logger
	start := time.Now()
	var bads []BadPeer
	for _, s := range cfg.BadPeers {
		b, _ := ParseBadPeer(s) // checked by Validate
		bads = append(bads, b)
	}
	procs := cfg.Procs
	if procs == 0 {
		procs = cfg.Coordinators + cfg.Aggregators + cfg.Peers + len(bads) + 1
	}
	if prev := runtime.GOMAXPROCS(0); procs > prev {
		runtime.GOMAXPROCS(procs)
		defer runtime.GOMAXPROCS(prev)
	}
	shards := cfg.Shards
	if shards == 0 {
		shards = cfg.Peers + len(bads)
	}
	var noise []float64
	if len(cfg.LabelNoise) > 0 {
		noise = make([]float64, shards)
		copy(noise, cfg.LabelNoise)
	}
	task, info, err := trainer.BuildTask(trainer.TaskSpec{Model: cfg.Model, Workers: shards, Partition: cfg.Partition,
		Seed: cfg.Seed, DataDir: cfg.DataDir, Batch: cfg.Batch, ValSamples: cfg.ValSamples, LabelNoise: noise})
	if err != nil {
		return nil, err
	}
	val, err := trainer.ValidationFor(modelSpec(cfg.Model), cfg.DataDir, cfg.ValSamples)
	if err != nil {
		return nil, err
	}
	valHash := val.Hash()
	dir := cfg.Dir
	if dir == "" {
		if dir, err = os.MkdirTemp("", "cohort-sim-"); err != nil {
			return nil, err
		}
		defer os.RemoveAll(dir)
	}

	// Coordinators: real Raft nodes with on-disk stores, QUIC on loopback.
	// Each binds its port (TCP and UDP, held) before anything is started: the voter list names them.
	socks, err := netutil.ListenN(cfg.Coordinators)
	if err != nil {
		return nil, err
	}
	defer func() {
		for _, s := range socks {
			s.Close() // the coordinator's own Close closed them already, or New never took them
		}
	}()
	var peers []consensus.Peer
	for i := 0; i < cfg.Coordinators; i++ {
		a := socks[i].Addr()
		name := fmt.Sprintf("c%d", i+1)
		id, err := identity(cfg.Seed, name)
		if err != nil {
			return nil, err
		}
		peers = append(peers, consensus.Peer{ID: name, Addr: a, Key: id.NodeID().String()})
	}
	nodes := make([]*node, cfg.Coordinators)
	var base coordinator.Config // a voter's, which the aggregators share
	defer func() {
		for _, n := range nodes {
			if n != nil && !n.dead {
				n.cancel()
				<-n.done
				n.srv.Close()
			}
		}
	}()
	for i, p := range peers {
		id, err := identity(cfg.Seed, p.ID)
		if err != nil {
			return nil, err
		}
		ccfg := coordinator.Config{ID: p.ID, Dir: filepath.Join(dir, p.ID), Listen: p.Addr,
			PacketConn: socks[i].UDP, RaftListener: socks[i].TCP, Peers: peers,
			Identity: id, Logger: log, Rounds: coordinator.RoundConfig{Timeout: cfg.RoundTimeout}, Tick: 100 * time.Millisecond, OnScore: cfg.OnScore,
			Validation: coordinator.ValidationConfig{Data: cfg.DataDir, Text: cfg.DataDir, Samples: cfg.ValSamples, LoadDelay: cfg.SlowValidator},
			// Raft's own default timeouts: every coordinator and peer shares this machine's cores,
			// and the node's tighter defaults (250 ms lease) make a loaded leader step down.
			Raft: consensus.Config{HeartbeatTimeout: 2 * time.Second, ElectionTimeout: 2 * time.Second, LeaderLeaseTimeout: time.Second},
			// Every peer of a simulation connects and registers from 127.0.0.1: limits per
			// source address would count them all as one. Per-key limits stay.
			Transport: transport.Config{MaxConnsPerSource: -1, MaxServingPerSource: -1}, Limits: coordinator.Limits{RegisterRate: -1, SourceRate: -1}}
		base = ccfg
		srv, err := coordinator.New(ccfg)
		if err != nil {
			return nil, err
		}
		nctx, cancel := context.WithCancel(ctx)
		n := &node{srv: srv, cancel: cancel, done: make(chan struct{})}
		// The coordinator's goroutines carry a profiler label, so a CPU profile of a whole
		// simulation tells the coordinators' work from the peers' (BenchmarkCohortScale).
		pprof.Do(nctx, pprof.Labels(ProfileLabel, "coordinator"), func(lctx context.Context) {
			go func() { defer close(n.done); srv.Run(lctx) }()
		})
		nodes[i] = n
	}
	var addrs []string
	for _, p := range peers {
		addrs = append(addrs, p.Addr)
	}
	if err := waitUntil(ctx, 30*time.Second, func() bool {
		return len(nodes[0].srv.Status().Coordinators) == cfg.Coordinators
	}); err != nil {
		return nil, fmt.Errorf("coordinators did not register: %w", err)
	}

	// The proposal, voted on by the peers.
	propID, err := identity(cfg.Seed, "proposer")
	if err != nil {
		return nil, err
	}
	proposer, err := client.Dial(client.Config{Addrs: addrs, Identity: propID, Logger: log})
	if err != nil {
		return nil, err
	}
	defer proposer.Close()
	if err := proposer.EnsureRegistered(ctx, "proposer", nil); err != nil {
		return nil, err
	}
	var link linkshape.Link
	if cfg.Link != "" {
		link, _ = linkshape.ParseLink(cfg.Link)
	}
	members := make([]*member, cfg.Peers+len(bads))
	defer func() {
		for _, m := range members {
			if m != nil {
				if m.cancel != nil {
					m.cancel()
					<-m.done
				}
				m.client.Close()
			}
		}
	}()
	for i := range members {
		name := fmt.Sprintf("peer-%d", i+1)
		if i >= cfg.Peers {
			name = bads[i-cfg.Peers].Name
		}
		id, err := identity(cfg.Seed, name)
		if err != nil {
			return nil, err
		}
		var pc net.PacketConn
		udp, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		pc = udp
		if cfg.Link != "" {
			if pc, err = linkshape.Wrap(udp, linkshape.Config{Link: link, Seed: cfg.Seed*131 + uint64(i), Direction: linkshape.Both}); err != nil {
				return nil, err
			}
		}
		cl, err := client.Dial(client.Config{Addrs: addrs, Identity: id, PacketConn: pc, Logger: log, Timeout: time.Minute})
		if err != nil {
			return nil, err
		}
		members[i] = &member{name: name, client: cl}
		if i >= cfg.Peers {
			members[i].bad = &bads[i-cfg.Peers]
		}
	}
	if err := parallel(members, func(m *member) error { return m.client.EnsureRegistered(ctx, m.name, []string{m.name}) }); err != nil {
		return nil, fmt.Errorf("register: %w", err)
	}
	// The operators (c1's node key) fund the treasury with the pool and grant the proposer and
	// every member a vote: fresh keys weigh nothing.
	const pool = 1_000_000
	voters := []string{proposer.ID()}
	for _, m := range members {
		voters = append(voters, m.client.ID())
	}
	if err := operate(ctx, addrs, cfg.Seed, log, pool, voters); err != nil {
		return nil, err
	}
	// Aggregators join once the voters' operators have funded the cohort (a majority of the
	// voters alone), before its first round: its slices go over them too.
	aggs, err := startAggregators(ctx, cfg, dir, log, peers, base)
	if err != nil {
		return nil, err
	}
	nodes = append(nodes, aggs...)
	res, err := proposer.Submit(ctx, &consensus.ProposeBody{Name: "sim-" + cfg.Model, Model: modelSpec(cfg.Model), Dataset: info.Source, ValidationHash: valHash[:],
		Params:     cfg.hyperparams(),
		RewardPool: pool, MinMembers: uint32(len(members)), QuorumBP: 5000, ThresholdBP: 5000,
		// Long enough for every member's vote to land, on a machine all of them share.
		VotingPeriodMs: max(1500, 5*int64(len(members)))})
	if err != nil {
		return nil, fmt.Errorf("propose: %w", err)
	}
	proposal := res.ID
	err = parallel(members, func(m *member) error {
		_, err := m.client.Submit(ctx, &consensus.VoteBody{Proposal: proposal, Yes: true})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("vote: %w", err)
	}
	var cohort uint64
	if err := waitUntil(ctx, 30*time.Second, func() bool {
		r, err := proposer.Query(ctx, protocol.Query{What: protocol.QueryProposal, ID: proposal})
		if err == nil && len(r.Proposals) == 1 && r.Proposals[0].Cohort != 0 {
			cohort = r.Proposals[0].Cohort
			return true
		}
		return false
	}); err != nil {
		return nil, fmt.Errorf("proposal %d did not pass: %w", proposal, err)
	}
	log.Info("cohort formed", "cohort", cohort, "proposal", proposal, "data", info.Source, "partition", info.Partition)

	// Peers join with their shards and train.
	var mu sync.Mutex
	thetas := map[uint32][]float32{} // θ after round t, from the first peer to apply it
	computeSum, computeN := map[uint32]float64{}, map[uint32]int{}
	upBytes, downBytes := map[uint32]int64{}, map[uint32]int64{} // uploads and aggregates, all peers, per round
	killName, killRound, _ := parseKill(cfg.KillPeer)
	// A shard registers its training samples as `cohort join` counts them: images, or a text's
	// non-overlapping windows (its size is in bytes).
	samples := func(shard int) uint64 {
		if task.Classifier {
			return uint64(info.ShardSizes[shard])
		}
		return peer.TextSamples(info.ShardSizes[shard], task.TokensPerSample)
	}
	for i, m := range members {
		src, contrib := task.Sources[i], peer.Contributor{Name: m.name, Fingerprint: info.Fingerprints[i], Samples: samples(i)}
		var wrap func(peer.Worker) peer.Worker
		if b := m.bad; b != nil {
			if rule := b.tamper(cfg.Seed); rule != nil {
				wrap = func(w peer.Worker) peer.Worker { return &tampered{Worker: w, rule: rule} }
			}
			switch b.Kind {
			case "labelflip":
				src = flipSource{Source: src, classes: 10}
			case "copy": // registers and trains on the copied peer's data
				var of int
				fmt.Sscanf(b.Of, "peer-%d", &of)
				train, _, _, err := trainer.LoadFashionMNIST(cfg.DataDir)
				if err != nil {
					return nil, err
				}
				if src, err = trainer.NewImageSource(train, info.Shards[of-1], cfg.Seed*7919+uint64(i)); err != nil {
					return nil, err
				}
				contrib.Fingerprint, contrib.Samples = info.Fingerprints[of-1], samples(of-1)
			}
		}
		co := peer.ClientCoordinators(m.client)
		if m.name == cfg.Straggler {
			co = late{co}
		}
		p, err := peer.New(peer.Config{Name: m.name, Coordinators: co, Cohort: cohort, Source: src, Batch: cfg.Batch,
			Contributors: []peer.Contributor{contrib}, Worker: wrap,
			Logger: log, Overlap: cfg.Overlap,
			OnRound: func(r peer.Report) {
				mu.Lock()
				defer mu.Unlock()
				m.rounds++
				computeSum[r.Round] += r.ComputeSeconds
				computeN[r.Round]++
				upBytes[r.Round] += int64(r.PayloadBytes)
				downBytes[r.Round] += int64(r.AggregateBytes)
				if r.Applied && thetas[r.Round] == nil {
					thetas[r.Round] = append([]float32(nil), members[i].peer.Worker().Global()...)
				}
			}})
		if err != nil {
			return nil, err
		}
		m.peer = p
	}
	// The honest peers join first: a planted copy must come after the data it copies.
	if err := parallel(members[:cfg.Peers], func(m *member) error { return m.peer.Join(ctx) }); err != nil {
		return nil, fmt.Errorf("join: %w", err)
	}
	if err := parallel(members[cfg.Peers:], func(m *member) error { return m.peer.Join(ctx) }); err != nil {
		return nil, fmt.Errorf("join: %w", err)
	}
	startPeer := func(m *member) {
		pctx, cancel := context.WithCancel(ctx)
		m.cancel, m.done, m.stopped = cancel, make(chan struct{}), false
		go func() { defer close(m.done); m.peer.Run(pctx) }()
	}
	for _, m := range members {
		startPeer(m)
	}

	// Watch the rounds: report progress, inject faults.
	evalModel, err := task.NewModel(cfg.Seed)
	if err != nil {
		return nil, err
	}
	sum := &Summary{Codec: cfg.Codec, DownCodec: spec.DownCodec(cfg.hyperparams()), OuterLR: cfg.OuterLR, OuterMomentum: cfg.OuterMomentum, ErrorDecay: cfg.ErrorDecay, Link: cfg.Link}
	var lastLeader string
	reported := uint32(0)
	killedLeader := false
	var lastWire int64
	for {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		time.Sleep(100 * time.Millisecond)
		live := liveNode(nodes)
		if live == nil {
			return nil, errors.New("no coordinator left")
		}
		st := live.srv.Status()
		if st.LeaderID != "" && st.LeaderID != lastLeader {
			if lastLeader != "" {
				sum.LeaderChanges++
			}
			lastLeader = st.LeaderID
		}
		// The rounds not reported yet, and the current one: not every round of a long run each time.
		var rounds []consensus.Round
		live.srv.Node().View(func(s *consensus.State) error {
			rounds, _, _ = s.RoundsRange(cohort, int(reported), math.MaxInt)
			return nil
		})
		if len(rounds) == 0 {
			continue
		}
		cur := rounds[len(rounds)-1]
		if cfg.KillLeaderAt > 0 && !killedLeader && int(cur.Number) >= cfg.KillLeaderAt {
			for _, n := range nodes {
				if !n.dead && n.srv.Node().IsLeader() {
					log.Warn("killing the leader coordinator", "node", n.srv.Status().ID, "round", cur.Number)
					n.cancel()
					<-n.done
					n.srv.Close()
					n.dead = true
					killedLeader = true
				}
			}
		}
		if killName != "" {
			for _, m := range members {
				if m.name != killName {
					continue
				}
				if int(cur.Number) == killRound && !m.stopped && cur.Status == consensus.RoundOpen {
					log.Warn("killing peer", "peer", m.name, "round", cur.Number)
					m.cancel()
					<-m.done
					m.stopped = true
				} else if m.stopped && int(cur.Number) > killRound {
					log.Warn("restarting peer", "peer", m.name, "round", cur.Number)
					startPeer(m)
				}
			}
		}
		for _, r := range rounds {
			if r.Number <= reported || r.Status != consensus.RoundClosed {
				continue
			}
			mu.Lock()
			theta := thetas[r.Number]
			compute := computeSum[r.Number] / float64(max(computeN[r.Number], 1))
			mu.Unlock()
			applied := theta != nil && hashEq(protocol.HashParams(theta), r.NewModelHash)
			if !applied && !hashEq(protocol.HashParams(theta), r.NewModelHash) && len(r.Receipts) > 0 {
				continue // a receipt exists but the peer's θ copy has not landed yet
			}
			pr := Progress{Round: int(r.Number), Rounds: cfg.Rounds, Participants: len(r.Receipts), Elapsed: time.Since(start),
				Applied: applied, LeaderChanges: sum.LeaderChanges, ComputeSeconds: compute}
			if applied {
				copy(evalModel.Params(), theta)
				lossSum, correct, count, err := evalModel.Eval(task.Val)
				if err != nil {
					return nil, err
				}
				pr.ValLoss, pr.ValAccuracy = lossSum/float64(count), float64(correct)/float64(count)
			} else if len(sum.History) > 0 {
				last := sum.History[len(sum.History)-1]
				pr.ValLoss, pr.ValAccuracy = last.ValLoss, last.ValAccuracy
			}
			for _, rc := range r.Receipts {
				pr.PayloadBytes += int64(rc.BytesSent)
			}
			var wire int64
			for _, m := range members {
				ws := m.client.WireStats()
				wire += int64(ws.BytesSent)
				pr.WireReceived += int64(ws.BytesReceived)
				pr.StreamBytes += int64(ws.StreamBytesSent + ws.StreamBytesReceived)
				pr.StreamBytesSent += int64(ws.StreamBytesSent)
				pr.PacketsSent += int64(ws.PacketsSent)
			}
			pr.WireBytes, pr.WireSent = wire, wire
			_, pr.AppliedIndex = live.srv.Node().Hash()
			if r.Number == 1 {
				sum.Scale.SetupSeconds = time.UnixMilli(r.OpenedAt).Sub(start).Seconds()
			}
			// A coordinator's connections close with it (the killed leader), and their counts go
			// with them: the total can step back.
			if link.Rate > 0 && r.ClosedAt > r.OpenedAt && wire > lastWire {
				secs := float64(r.ClosedAt-r.OpenedAt) / 1000
				pr.LinkUtil = float64(8*(wire-lastWire)) / (float64(cfg.Peers) * float64(link.Rate) * secs)
			}
			lastWire = wire
			sum.History = append(sum.History, pr)
			reported = r.Number
			if cfg.Progress != nil {
				cfg.Progress(pr)
			}
		}
		if int(reported) >= cfg.Rounds {
			break
		}
	}
	sum.RoundsCompleted = int(reported)
	sum.WallSeconds = time.Since(start).Seconds()
	if n := len(sum.History); n > 0 {
		sum.FinalValLoss, sum.FinalValAccuracy = sum.History[n-1].ValLoss, sum.History[n-1].ValAccuracy
	}
	if n := len(sum.History); n > 1 {
		// Steady state: the rounds after the first, without setup (proposal, joins, first model).
		var c float64
		for _, h := range sum.History[1:] {
			c += h.ComputeSeconds
		}
		first, last := sum.History[0], sum.History[n-1]
		if w := (last.Elapsed - first.Elapsed).Seconds(); w > 0 {
			sum.ComputeUtilSteady = c / w
		}
		rs := float64(n - 1)
		sum.Scale.RoundSeconds = (last.Elapsed - first.Elapsed).Seconds() / rs
		sum.Scale.RaftEntriesPerRound = float64(last.AppliedIndex-first.AppliedIndex) / rs
	}
	// What validating cost: each coordinator measures every model its replica reaches.
	var models int
	var secs float64
	for _, n := range nodes {
		if n != nil && n.srv != nil {
			m, s := n.srv.Validation()
			models, secs = models+m, secs+s
		}
	}
	if models > 0 {
		sum.Scale.ValidationSeconds = secs / float64(models)
	}
	// Peers finish their last round; every replica must hold the recorded final model.
	final := lastHash(nodes, cohort)
	sum.ModelHash = fmt.Sprintf("%x", final[:8])
	sum.ModelSpec = modelSpec(cfg.Model)
	waitUntil(ctx, 10*time.Second, func() bool {
		for _, m := range members {
			select {
			case <-m.done:
			default:
				return false
			}
		}
		return true
	})
	if n := len(sum.History); n > 1 {
		// Control traffic in the rounds after the first: the peers' wire bytes both ways since the
		// first round was reported, less their uploads and aggregates of those rounds.
		var sent, recv, streamed, streamedSent, packets, up, down int64
		for _, m := range members {
			ws := m.client.WireStats()
			sent += int64(ws.BytesSent)
			recv += int64(ws.BytesReceived)
			streamed += int64(ws.StreamBytesSent + ws.StreamBytesReceived)
			streamedSent += int64(ws.StreamBytesSent)
			packets += int64(ws.PacketsSent)
		}
		mu.Lock()
		for r := range upBytes {
			if r > uint32(sum.History[0].Round) {
				up, down = up+upBytes[r], down+downBytes[r]
			}
		}
		mu.Unlock()
		sent -= sum.History[0].WireSent
		recv -= sum.History[0].WireReceived
		streamed -= sum.History[0].StreamBytes
		streamedSent -= sum.History[0].StreamBytesSent
		packets -= sum.History[0].PacketsSent
		if sent > 0 && up > 0 {
			per := float64(n-1) * float64(len(members))
			sum.Scale.ControlBytesPerPeerRound = float64(streamed-up-down) / per
			sum.Scale.PacketOverheadPerPeerRound = float64(sent+recv-streamed) / per
			sum.Scale.WireSentOverPayload = float64(sent) / float64(up)
			sum.Scale.UploadBytesPerPeerRound, sum.Scale.AggregateBytesPerPeerRound = float64(up)/per, float64(down)/per
			sum.Scale.SentControlBytesPerPeerRound = float64(streamedSent-up) / per
			sum.Scale.SentPacketBytesPerPeerRound = float64(sent-streamedSent) / per
			sum.Scale.PacketsSentPerPeerRound = float64(packets) / per
		}
	}
	sum.ReplicasAgree = true
	var payload, wire int64
	var compute float64
	for _, m := range members {
		h := protocol.HashParams(m.peer.Worker().Global())
		if h != final {
			sum.ReplicasAgree = false
		} else if sum.Theta == nil {
			sum.Theta = append([]float32(nil), m.peer.Worker().Global()...)
		}
		ws := m.client.WireStats()
		st := m.peer.Stats
		sum.Peers = append(sum.Peers, PeerSummary{Name: m.name, RoundsParticipated: st.Rounds, Samples: st.Samples,
			PayloadBytes: st.PayloadBytes, WireBytesSent: int64(ws.BytesSent)})
		payload += st.PayloadBytes
		wire += int64(ws.BytesSent)
		compute += st.ComputeSeconds
	}
	k := int64(len(members))
	sum.PayloadBytesPerPeer, sum.BytesSentPerPeer = payload/k, wire/k
	sum.ComputeSeconds = compute / float64(k)
	for i := range sum.Peers {
		if b := members[i].bad; b != nil {
			sum.Peers[i].Bad = b.Kind
		}
	}
	// The leader scores the last rounds just after they close: wait for the ledger to settle.
	waitUntil(ctx, 90*time.Second, func() bool {
		n := liveNode(nodes)
		scored := 0
		notes := map[int]string{}
		n.srv.Node().View(func(s *consensus.State) error {
			rs, _ := s.Rounds(cohort)
			for _, r := range rs {
				if r.Scored {
					scored++
				}
				if r.Scored && r.ScoreNote != "" {
					notes[int(r.Number)] = r.ScoreNote
				}
			}
			return nil
		})
		sum.RoundsScored, sum.ScoreNotes = scored, notes
		return scored >= int(reported)
	})
	sum.Pool, sum.Shares, sum.Flags, sum.Influence = ledgerOf(liveNode(nodes), cohort)
	sort.Slice(sum.Peers, func(i, j int) bool { return sum.Peers[i].Name < sum.Peers[j].Name })
	return sum, nil
}

// ledgerOf reads what the cohort paid each contributor and the flags raised about them.
func ledgerOf(n *node, cohort uint64) (uint64, map[string]uint64, map[string][]string, map[string][]float64) {
	shares, flags, infl := map[string]uint64{}, map[string][]string{}, map[string][]float64{}
	var pool uint64
	n.srv.Node().View(func(s *consensus.State) error {
		c, err := s.Cohort(cohort)
		if err != nil {
			return err
		}
		if p, err := s.Proposal(c.Proposal); err == nil {
			pool = p.RewardPool
		}
		for _, m := range c.Members {
			for _, cd := range m.Contributors {
				shares[consensus.ContributorName(cd.Name)] += 0
			}
		}
		for _, p := range s.Ledger().Payouts {
			if p.Cohort == cohort {
				shares[consensus.ContributorName(p.Contributor)] += p.Data + p.Compute
			}
		}
		seen := map[[2]string]bool{}
		rs, _ := s.Rounds(cohort)
		for i, r := range rs {
			if !r.Scored {
				continue
			}
			for name := range shares {
				infl[name] = append(infl[name], 0)
			}
			for _, x := range r.Influence {
				if v, ok := infl[consensus.ContributorName(x.Contributor)]; ok && len(v) > 0 {
					v[len(v)-1] = float64(x.Value) / consensus.InfluenceUnit
				}
			}
			_ = i
			for _, f := range r.Flags {
				name := consensus.ContributorName(f.Contributor)
				if !seen[[2]string{name, f.Kind}] {
					seen[[2]string{name, f.Kind}] = true
					flags[name] = append(flags[name], f.Kind+": "+f.Detail)
				}
			}
		}
		return nil
	})
	return pool, shares, flags, infl
}

// operate submits the operator commands a simulated cohort needs — fund the treasury with pool
// and grant each voter one vote — signed by a majority of the coordinators' operators (c1, c2, …),
// as operator commands must be.
func operate(ctx context.Context, addrs []string, seed uint64, log *slog.Logger, pool uint64, voters []string) error {
	var ops []*client.Client
	defer func() {
		for _, op := range ops {
			op.Close()
		}
	}()
	for i := 0; i < len(addrs)/2+1; i++ {
		id, err := identity(seed, fmt.Sprintf("c%d", i+1))
		if err != nil {
			return err
		}
		op, err := client.Dial(client.Config{Addrs: addrs, Identity: id, Logger: log})
		if err != nil {
			return err
		}
		ops = append(ops, op)
	}
	for _, op := range ops {
		if _, err := op.Submit(ctx, &consensus.FundBody{Amount: pool}); err != nil {
			return fmt.Errorf("fund the treasury: %w", err)
		}
	}
	// One motion grants a whole chunk of voters (GrantBody.More): a few commands, not one per voter.
	sorted := slices.Clone(voters)
	slices.Sort(sorted)
	for lo := 0; lo < len(sorted); lo += grantChunk {
		chunk := sorted[lo:min(lo+grantChunk, len(sorted))]
		for _, op := range ops {
			if _, err := op.Submit(ctx, &consensus.GrantBody{Member: chunk[0], Votes: 1, More: chunk[1:]}); err != nil {
				return fmt.Errorf("grant %d voters a vote: %w", len(chunk), err)
			}
		}
	}
	return nil
}

// grantChunk is how many voters one grant motion names: well within consensus.MaxListLen and a
// command's size.
const grantChunk = 1024

func modelSpec(m string) string {
	if m == "mlp" {
		return "mlp:784-256-10"
	}
	return m
}

func hashEq(h [32]byte, b []byte) bool { return string(h[:]) == string(b) }

func liveNode(nodes []*node) *node {
	for _, n := range nodes {
		if !n.dead {
			return n
		}
	}
	return nil
}

func lastHash(nodes []*node, cohort uint64) [32]byte {
	var h [32]byte
	liveNode(nodes).srv.Node().View(func(s *consensus.State) error {
		c, err := s.Cohort(cohort)
		if err == nil {
			copy(h[:], c.ModelHash)
		}
		return nil
	})
	return h
}

func waitUntil(ctx context.Context, d time.Duration, f func() bool) error {
	deadline := time.Now().Add(d)
	for !f() {
		if time.Now().After(deadline) {
			return fmt.Errorf("timed out after %s", d)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	return nil
}

func parallel(ms []*member, f func(*member) error) error {
	errs := make([]error, len(ms))
	var wg sync.WaitGroup
	for i, m := range ms {
		wg.Add(1)
		go func() { defer wg.Done(); errs[i] = f(m) }()
	}
	wg.Wait()
	return errors.Join(errs...)
}
