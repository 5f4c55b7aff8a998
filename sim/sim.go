// Package sim runs a whole cohort on one machine (`cohort simulate`): real coordinator nodes
// (on-disk Raft in a temporary directory, QUIC on loopback) and real peers, each peer's traffic
// through a shaped link (rate, delay, loss), with faults injected on cue.
//
// The flow is the one people follow: a member proposes the model, every peer votes, the leader
// tallies, peers join the cohort with their data shards (fingerprinted) and train; the leader opens
// and closes rounds, coordinators aggregate slices. Sim only watches: it evaluates the model a peer
// holds after each round on the validation set and gathers the numbers.
package sim

import (
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/cohortlab/cohort/consensus"
	"github.com/cohortlab/cohort/coordinator/attribution"
	"github.com/cohortlab/cohort/spec"
	"github.com/cohortlab/cohort/trainer"
	"github.com/cohortlab/cohort/transport/linkshape"
)

// Config configures a simulation. Zero values mean the defaults shown.
type Config struct {
	Coordinators int    // default 3: the Raft voters
	Peers        int    // default 6
	Model        string // default "mlp"
	Rounds       int    // default spec.Defaults.Rounds
	InnerSteps   int    // default spec.Defaults.InnerSteps
	// Aggregators are coordinators beyond the voters (a1, a2, …): Raft non-voters the operators
	// approve and that join the running cluster; they hold replicas and aggregate slices like
	// the voters, but do not vote. Default 0.
	Aggregators int
	// Overlap is τ, the inner steps every peer takes while its update travels (peer.Config.Overlap);
	// 0: none.
	Overlap int
	Batch   int    // default: the model's
	Codec   string // default spec.Defaults.Codec
	// DownCodec is the proposal's codec of the aggregates sent down; default "", the proposal
	// field's empty value (spec.DownCodec: q8+zstd for a top-k Codec).
	DownCodec string
	// OuterLR, OuterMomentum and ErrorDecay are the proposal's outer Nesterov step and the peers'
	// error-feedback decay β, as decimals; defaults from spec.Defaults.
	OuterLR, OuterMomentum, ErrorDecay string
	Partition                          string // default "dirichlet:0.5"
	Link                               string // each peer's link, e.g. "10mbit,50ms,1%"; "" = unshaped loopback
	Seed                               uint64
	DataDir                            string // Fashion-MNIST; default: embedded subset
	ValSamples                         int    // default 1000
	// LabelNoise is, per shard (peer i holds shard i), the fraction of its samples given a wrong
	// label (image models); shorter than the shards: the rest have none.
	LabelNoise []float64
	// OnScore, if set, receives every round a leader scores (see coordinator.Config.OnScore): a
	// round re-scored after a leader change comes again, the last one counts.
	OnScore func(attribution.Trace)
	// InnerLR, WeightDecay, Schedule and ClipNorm are the proposal's inner AdamW (decimals, and
	// spec.ScheduleConstant or spec.ScheduleCosine), Warmup its warm-up steps; defaults from
	// spec.Defaults.
	InnerLR, WeightDecay, Schedule, ClipNorm string
	Warmup                                   int
	// KillLeaderAt kills the leader coordinator when this round opens (0: never).
	KillLeaderAt int
	// KillPeer is "NAME@ROUND": that peer stops when the round opens and restarts (from its
	// replica, re-syncing if needed) one round later.
	KillPeer string
	// Straggler names a peer whose uploads arrive after the deadline.
	Straggler string
	// SlowValidator holds every coordinator's validator back this long before it loads (a slow
	// or busy machine): the rounds that close meanwhile are scored once it is ready.
	SlowValidator time.Duration
	// BadPeers are planted dishonest peers, "KIND[:ARG][@NAME]" (see ParseBadPeer), joining
	// after the honest ones, each with a shard of its own.
	BadPeers []string
	// Shards is how many shards the training data is split into; default one per peer, planted
	// ones included. Peer i trains on shard i; a clean run comparable to one with planted peers
	// uses the same Shards.
	Shards int
	// RoundTimeout bounds a round; default 120s (the leader shortens it once rounds have run).
	RoundTimeout time.Duration
	// Procs is GOMAXPROCS while the simulation runs; default one per simulated node (coordinators,
	// aggregators and peers, planted ones included) plus one, and never fewer than GOMAXPROCS already is. Every
	// node shares this machine's cores, but each gets its own P, as if it ran on its own machine:
	// with fewer Ps than CPU-bound peers, Go's scheduler leaves goroutines woken by the network
	// (raft heartbeats, QUIC packets) waiting behind training goroutines for up to ~60 time slices
	// (it looks at its global run queue every 61st), which stalled raft leases for over a second
	// and delayed every upload and fetch. With more Ps than cores the kernel time-slices them
	// fairly instead.
	Procs int
	// Dir holds the coordinators' data; default a temporary directory, removed afterwards.
	Dir    string
	Logger *slog.Logger
	// Progress is called once per round with the cohort's numbers.
	Progress func(Progress)
}

// MaxAggregators bounds Config.Aggregators: every one is a whole coordinator on this machine.
const MaxAggregators = 16

func (c Config) withDefaults() Config {
	if c.Coordinators == 0 {
		c.Coordinators = 3
	}
	if c.Peers == 0 {
		c.Peers = 6
	}
	if c.Model == "" {
		c.Model = "mlp"
	}
	if c.Rounds == 0 {
		c.Rounds = int(spec.Defaults.Rounds)
	}
	if c.InnerSteps == 0 {
		c.InnerSteps = int(spec.Defaults.InnerSteps)
	}
	if c.Codec == "" {
		c.Codec = spec.Defaults.Codec
	}
	if c.OuterLR == "" {
		c.OuterLR = spec.Defaults.OuterLR
	}
	if c.OuterMomentum == "" {
		c.OuterMomentum = spec.Defaults.OuterMomentum
	}
	if c.ErrorDecay == "" {
		c.ErrorDecay = spec.Defaults.ErrorDecay
	}
	if c.Partition == "" {
		c.Partition = "dirichlet:0.5"
	}
	if c.DataDir == "" {
		c.DataDir = trainer.EmbeddedData
	}
	if c.ValSamples == 0 {
		c.ValSamples = 1000
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// hyperparams are the proposal's training settings.
func (c Config) hyperparams() consensus.Hyperparams {
	return consensus.Hyperparams{InnerSteps: uint32(c.InnerSteps), Rounds: uint32(c.Rounds), Codec: c.Codec, DownCodec: c.DownCodec,
		OuterLR: c.OuterLR, OuterMomentum: c.OuterMomentum, ErrorDecay: c.ErrorDecay,
		InnerLR: c.InnerLR, WeightDecay: c.WeightDecay, Warmup: uint32(c.Warmup), Schedule: c.Schedule, ClipNorm: c.ClipNorm}
}

// Validate reports a configuration that cannot run.
func (c Config) Validate() error {
	c = c.withDefaults()
	if c.Coordinators < 1 || c.Coordinators > 7 {
		return fmt.Errorf("coordinators %d: want 1 to 7", c.Coordinators)
	}
	if c.Aggregators < 0 || c.Aggregators > MaxAggregators {
		return fmt.Errorf("aggregators %d: want 0 to %d", c.Aggregators, MaxAggregators)
	}
	if c.Peers < 1 || c.Rounds < 1 || c.InnerSteps < 1 {
		return fmt.Errorf("peers %d, rounds %d and inner steps %d must be ≥ 1", c.Peers, c.Rounds, c.InnerSteps)
	}
	if c.Warmup < 0 {
		return fmt.Errorf("warm-up %d steps: want ≥ 0", c.Warmup)
	}
	if c.Procs < 0 || c.Procs > 1024 {
		return fmt.Errorf("procs %d: want 0 (one per node) to 1024", c.Procs)
	}
	if c.Overlap < 0 || c.Overlap >= c.InnerSteps {
		return fmt.Errorf("overlap %d: want 0 ≤ τ < inner steps (%d)", c.Overlap, c.InnerSteps)
	}
	if c.KillLeaderAt < 0 || c.KillLeaderAt > c.Rounds {
		return fmt.Errorf("kill-leader-at %d: want a round in 1..%d", c.KillLeaderAt, c.Rounds)
	}
	if c.KillLeaderAt > 0 && c.Coordinators < 3 {
		return fmt.Errorf("kill-leader-at needs at least 3 coordinators to keep a quorum")
	}
	if err := spec.Check(c.hyperparams()); err != nil {
		return err
	}
	if c.Link != "" {
		if _, err := linkshape.ParseLink(c.Link); err != nil {
			return fmt.Errorf("link: %w", err)
		}
	}
	if c.KillPeer != "" {
		if _, _, err := parseKill(c.KillPeer); err != nil {
			return err
		}
	}
	if len(c.LabelNoise) > max(c.Shards, c.Peers+len(c.BadPeers)) {
		return fmt.Errorf("label noise: %d values for %d shards", len(c.LabelNoise), max(c.Shards, c.Peers+len(c.BadPeers)))
	}
	for i, f := range c.LabelNoise {
		if !(f >= 0 && f <= 1) {
			return fmt.Errorf("label noise of shard %d: %v is not a fraction in [0,1]", i+1, f)
		}
	}
	if c.Shards != 0 && c.Shards < c.Peers+len(c.BadPeers) {
		return fmt.Errorf("shards %d: want at least one per peer (%d)", c.Shards, c.Peers+len(c.BadPeers))
	}
	names := map[string]bool{}
	for i := 1; i <= c.Peers; i++ {
		names[fmt.Sprintf("peer-%d", i)] = true
	}
	for _, s := range c.BadPeers {
		b, err := ParseBadPeer(s)
		if err != nil {
			return err
		}
		if names[b.Name] {
			return fmt.Errorf("bad-peer %q: the name %s is taken", s, b.Name)
		}
		if b.Kind == "copy" && !names[b.Of] {
			return fmt.Errorf("bad-peer %q: no peer %s to copy", s, b.Of)
		}
		if (b.Kind == "copy" || b.Kind == "labelflip") && !strings.HasPrefix(c.Model, "mlp") {
			return fmt.Errorf("bad-peer %q: %s needs the image classifier (--model mlp)", s, b.Kind)
		}
		names[b.Name] = true
	}
	return nil
}

func parseKill(s string) (string, int, error) {
	name, round, ok := strings.Cut(s, "@")
	r, err := strconv.Atoi(round)
	if !ok || name == "" || err != nil || r < 1 {
		return "", 0, fmt.Errorf("kill-peer %q: want NAME@ROUND", s)
	}
	return name, r, nil
}

// Progress is one round as the cohort saw it.
type Progress struct {
	Round, Rounds  int
	ValLoss        float64
	ValAccuracy    float64
	Participants   int
	PayloadBytes   int64 // uploaded by all peers this round
	WireBytes      int64 // on the wire, all peers, cumulative
	Elapsed        time.Duration
	LinkUtil       float64 // payload bits / (peers × link rate × round time)
	Applied        bool
	LeaderChanges  int
	ComputeSeconds float64 // mean over peers, this round
	// WireSent and WireReceived are the peers' QUIC bytes so far, and AppliedIndex the Raft log
	// index a coordinator had applied, when the round was reported.
	WireSent, WireReceived int64
	StreamBytes            int64 // the messages they carried, both ways
	StreamBytesSent        int64 // of which the peers sent
	PacketsSent            int64 // the peers' QUIC packets sent so far
	AppliedIndex           uint64
}

// ProfileLabel is the runtime/pprof label key a simulation's coordinator goroutines carry
// (value "coordinator"): a CPU profile of a simulation counts their work apart from the peers'.
const ProfileLabel = "cohort-role"

// Scale is what a simulation measured of its own costs in the rounds after the first.
type Scale struct {
	// SetupSeconds runs from the start to the first round's opening: coordinators, registrations,
	// grants, the proposal and its vote, the joins.
	SetupSeconds float64 `json:"setup_seconds"`
	// RoundSeconds is the wall time per round.
	RoundSeconds float64 `json:"round_seconds"`
	// RaftEntriesPerRound is the growth of the Raft log per round.
	RaftEntriesPerRound float64 `json:"raft_entries_per_round"`
	// ControlBytesPerPeerRound is what one peer's messages carried per round, both ways, beyond its
	// uploads and the aggregates it fetched: polls, the round's record, receipts, frame headers.
	ControlBytesPerPeerRound float64 `json:"control_bytes_per_peer_round"`
	// PacketOverheadPerPeerRound is the rest of its wire bytes, both ways: QUIC's packet headers,
	// acknowledgements, retransmissions and handshakes, for data and control alike.
	PacketOverheadPerPeerRound float64 `json:"packet_overhead_per_peer_round"`
	// WireSentOverPayload is what the peers sent on the wire over the uploads they sent.
	WireSentOverPayload float64 `json:"wire_sent_over_payload"`
	// ValidationSeconds is what measuring one model took a coordinator's validator (K
	// validation gradients and the whole split's loss and accuracy), on average: the cost of
	// scoring a round, on every coordinator, against RoundSeconds.
	ValidationSeconds float64 `json:"validation_seconds"`
	// UploadBytesPerPeerRound and AggregateBytesPerPeerRound are one peer's uploads (compress
	// messages) and the aggregates it fetched (down-codec messages), per round.
	UploadBytesPerPeerRound    float64 `json:"upload_bytes_per_peer_round"`
	AggregateBytesPerPeerRound float64 `json:"aggregate_bytes_per_peer_round"`
	// What one peer sent per round beyond its uploads: the other messages' bytes (requests, long
	// polls, receipts, frame headers) and QUIC's (packet headers, acknowledgements,
	// retransmissions), and the QUIC packets it sent.
	SentControlBytesPerPeerRound float64 `json:"sent_control_bytes_per_peer_round"`
	SentPacketBytesPerPeerRound  float64 `json:"sent_packet_bytes_per_peer_round"`
	PacketsSentPerPeerRound      float64 `json:"packets_sent_per_peer_round"`
}

// PeerSummary is one peer in Summary.
type PeerSummary struct {
	Name               string `json:"name"`
	Bad                string `json:"bad,omitempty"` // the planted behaviour, if any
	RoundsParticipated int    `json:"rounds_participated"`
	Samples            int    `json:"samples"`
	PayloadBytes       int64  `json:"payload_bytes"`
	WireBytesSent      int64  `json:"wire_bytes_sent"`
}

// Summary is what `cohort simulate --json` prints.
type Summary struct {
	RoundsCompleted     int     `json:"rounds_completed"`
	FinalValLoss        float64 `json:"final_val_loss"`
	FinalValAccuracy    float64 `json:"final_val_accuracy"`
	BytesSentPerPeer    int64   `json:"bytes_sent_per_peer"`
	PayloadBytesPerPeer int64   `json:"payload_bytes_per_peer"`
	WallSeconds         float64 `json:"wall_seconds"`
	ComputeSeconds      float64 `json:"compute_seconds"`
	LeaderChanges       int     `json:"leader_changes"`
	// ComputeUtilSteady is the time peers spent in inner steps over the wall time of the rounds
	// after the first (setup excluded): the compute utilisation of a running cohort.
	ComputeUtilSteady float64 `json:"compute_util_steady"`
	ModelHash         string  `json:"model_hash"`
	// Theta is the final model's parameters (a replica holding ModelHash's; nil if none does),
	// of the model ModelSpec names.
	Theta     []float32 `json:"-"`
	ModelSpec string    `json:"model_spec"`
	// Shares is what each contributor was paid from the reward pool (Pool), Flags what the
	// validator noticed about contributors ("kind: detail", once per kind).
	Pool   uint64              `json:"pool"`
	Shares map[string]uint64   `json:"shares"`
	Flags  map[string][]string `json:"flags"`
	// Influence is each contributor's measured influence per scored round (consensus.Influence
	// in float units; 0 when it did not take part).
	Influence map[string][]float64 `json:"influence"`
	// RoundsScored counts rounds with a ScoreCommit when the summary was taken.
	RoundsScored int `json:"rounds_scored"`
	// ScoreNotes says, for each scored round that paid nobody, why (the ScoreCommit's note:
	// abandoned, no receipts, the validator could not score it, no update helped).
	ScoreNotes    map[int]string `json:"score_notes,omitempty"`
	ReplicasAgree bool           `json:"replicas_agree"`
	Scale         Scale          `json:"scale"`
	Codec         string         `json:"codec"`
	DownCodec     string         `json:"down_codec"` // the aggregates' codec (spec.DownCodec)
	OuterLR       string         `json:"outer_lr"`
	OuterMomentum string         `json:"outer_momentum"`
	ErrorDecay    string         `json:"ef_decay,omitempty"`
	Link          string         `json:"link"`
	Peers         []PeerSummary  `json:"peers"`
	History       []Progress     `json:"-"`
}
