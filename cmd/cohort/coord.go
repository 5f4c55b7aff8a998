package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/cohortlab/cohort/client"

	"github.com/urfave/cli/v2"

	"github.com/cohortlab/cohort/consensus"
	"github.com/cohortlab/cohort/coordinator"
	"github.com/cohortlab/cohort/coordinator/report"
	"github.com/cohortlab/cohort/protocol"
	"github.com/cohortlab/cohort/spec"
	"github.com/cohortlab/cohort/trainer"
	"github.com/cohortlab/cohort/transport"
)

func keygenCommand() *cli.Command {
	return &cli.Command{
		Name:  "keygen",
		Usage: "create an ed25519 key: a member's or a coordinator node's identity",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "out", Required: true, Usage: "key file to write (PEM, mode 0600); refuses to overwrite", EnvVars: envVars("out")},
		},
		Action: func(c *cli.Context) error {
			path := c.String("out")
			if _, err := os.Stat(path); err == nil {
				return fmt.Errorf("keygen: %s exists; not overwriting a key", path)
			}
			id, err := transport.GenerateIdentity(rand.Reader)
			if err != nil {
				return err
			}
			if err := id.SaveKey(path); err != nil {
				return fmt.Errorf("keygen: %w", err)
			}
			fmt.Fprintf(c.App.Writer, "wrote %s\nid %s\n", path, id.NodeID())
			return nil
		},
	}
}

func coordinatorCommand() *cli.Command {
	return &cli.Command{
		Name:  "coordinator",
		Usage: "run one coordinator node (Raft replica + QUIC client API)",
		Description: `Start a three-node cluster (three terminals or machines). Each operator makes a node key
   and shares its ID:
     cohort keygen --out ./c1/node.key          (prints: id KEYID)
   then every node gets the same voter list, with each voter's key ID pinned:
     cohort coordinator --id c1 --dir ./c1 --listen 127.0.0.1:7001 \
       --peers c1=KEY1@127.0.0.1:7001,c2=KEY2@127.0.0.1:7002,c3=KEY3@127.0.0.1:7003
   and the same for c2 and c3. A node restarted with its --dir catches up from the others.
   To add a node to a running cluster, a majority of the operators first approve its key
   (cohort approve-coordinator, each with its own node key), then it starts with
   --join KEYID@ADDR (a coordinator it trusts) instead of --peers.
   With --aggregator as well the node joins as an aggregator: a Raft non-voter that follows
   the log, holds the state and every cohort's model, aggregates the slices the leader gives
   it (slices go over voters and aggregators alike) and answers members, but does not count
   toward the quorum and never leads. Keep 3 or 5 voters and add aggregators for aggregation
   bandwidth; an aggregator's key is approved like any coordinator's.
   The address is used twice: QUIC (UDP) for the client API and TCP for Raft. Raft speaks
   TLS 1.3 and admits only the cluster's coordinator keys; expose both to the other
   coordinators, and only UDP to members (see SECURITY.md).
   With --listen-fds 3,4 the node serves on a UDP and a TCP socket already bound to one
   address and inherited as those descriptors (systemd socket activation, or a parent that
   bound port 0) instead of binding --listen itself.
   --http 127.0.0.1:8080 serves a read-only dashboard (cluster, cohorts, contributions) and
   Prometheus metrics at /metrics.`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "id", Required: true, Usage: "node ID, e.g. c1", EnvVars: envVars("id")},
			&cli.StringFlag{Name: "dir", Required: true, Usage: "data directory (raft log, snapshots, node key)", EnvVars: envVars("dir")},
			&cli.StringFlag{Name: "listen", Usage: "IP:PORT for QUIC (UDP) and Raft (TCP); required unless --listen-fds", EnvVars: envVars("listen")},
			&cli.StringFlag{Name: "listen-fds", Usage: "UDP,TCP: inherited file descriptors (e.g. 3,4) of sockets already bound to one IP:PORT, for QUIC and Raft, from a supervisor such as systemd socket activation; --listen, if given, must be their address", EnvVars: envVars("listen_fds")},
			&cli.StringFlag{Name: "peers", Usage: "initial voters ID=KEYID@IP:PORT,... (this node included; KEYID from cohort keygen)", EnvVars: envVars("peers")},
			&cli.StringFlag{Name: "join", Usage: "KEYID@IP:PORT of a running coordinator to join through (the majority must have approved this node's key)", EnvVars: envVars("join")},
			&cli.BoolFlag{Name: "aggregator", Usage: "join (with --join) as an aggregator: a Raft non-voter that aggregates slices and holds a replica, but does not vote or lead", EnvVars: envVars("aggregator")},
			&cli.StringFlag{Name: "key", Usage: "node key file (default DIR/node.key, created if missing)", EnvVars: envVars("key")},
			&cli.DurationFlag{Name: "heartbeat-timeout", Usage: "raft heartbeat timeout (default 1s)", EnvVars: envVars("heartbeat_timeout")},
			&cli.DurationFlag{Name: "election-timeout", Usage: "raft election timeout (default 1s)", EnvVars: envVars("election_timeout")},
			&cli.Uint64Flag{Name: "snapshot-threshold", Usage: "log entries between snapshots (default 8192)", EnvVars: envVars("snapshot_threshold")},
			&cli.Uint64Flag{Name: "trailing-logs", Usage: "log entries kept after a snapshot (default 10240); a follower further behind gets the snapshot", EnvVars: envVars("trailing_logs")},
			&cli.DurationFlag{Name: "snapshot-interval", Usage: "how often to check whether to snapshot (default 120s)", EnvVars: envVars("snapshot_interval")},
			&cli.StringSliceFlag{Name: "data", Usage: "where the validator loads proposals' validation splits (repeatable, one of each kind): a Fashion-MNIST directory or \"embedded\" for image models (default: the system copy if installed, else the embedded subset), and a UTF-8 text file or directory of .txt files for gpt models, whose last 10 % validates (default: the embedded play); a text proposal must be proposed with the same text (cohort propose --data)", EnvVars: envVars("data")},
			&cli.IntFlag{Name: "val-samples", Value: 1000, Usage: "validation samples the validator scores updates on", EnvVars: envVars("val_samples")},
			&cli.StringFlag{Name: "http", Usage: "serve the read-only dashboard and /metrics at HOST:PORT (TCP; off if empty)", EnvVars: envVars("http")},
		},
		Action: runCoordinator,
	}
}

func runCoordinator(c *cli.Context) error {
	if c.NArg() > 0 {
		return fmt.Errorf("coordinator: unexpected argument %q", c.Args().First())
	}
	if err := checkFlags(c, "coordinator", between("val-samples", 1, maxValSamples)); err != nil {
		return err
	}
	if c.String("listen") == "" && c.String("listen-fds") == "" {
		return errors.New("coordinator: --listen IP:PORT is required (or --listen-fds with sockets already bound)")
	}
	fds, err := parseListenFDs(c.String("listen-fds"))
	if err != nil {
		return err
	}
	dir := c.String("dir")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("coordinator: %w", err)
	}
	keyPath := c.String("key")
	if keyPath == "" {
		keyPath = filepath.Join(dir, "node.key")
	}
	id, err := transport.LoadOrCreateKey(keyPath, rand.Reader)
	if err != nil {
		return fmt.Errorf("coordinator: %w", err)
	}
	peers, err := coordinator.ParsePeers(c.String("peers"))
	if err != nil {
		return fmt.Errorf("coordinator: --peers: %w", err)
	}
	var joinKey, join string
	if s := c.String("join"); s != "" {
		if joinKey, join, err = transport.ParsePinned(s); err != nil {
			return fmt.Errorf("coordinator: --join: %w", err)
		}
	}
	rc := consensus.Config{HeartbeatTimeout: c.Duration("heartbeat-timeout"), ElectionTimeout: c.Duration("election-timeout"),
		SnapshotThreshold: c.Uint64("snapshot-threshold"), TrailingLogs: c.Uint64("trailing-logs"), SnapshotInterval: c.Duration("snapshot-interval")}
	if c.String("log-level") == "debug" { // raft's own log lines, at info, with ours
		rc.LogOutput, rc.LogLevel = c.App.ErrWriter, "info"
		if rc.LogOutput == nil {
			rc.LogOutput = os.Stderr
		}
	}
	if rc.HeartbeatTimeout > 0 && rc.HeartbeatTimeout < time.Second {
		rc.LeaderLeaseTimeout = rc.HeartbeatTimeout / 2
	}
	var pc net.PacketConn
	var ln net.Listener
	if fds != nil {
		if pc, ln, err = inheritSockets(fds[0], fds[1]); err != nil {
			return err
		}
	}
	val, err := validationData(c.StringSlice("data"))
	if err != nil {
		return fmt.Errorf("coordinator: %w", err)
	}
	val.Samples = c.Int("val-samples")
	srv, err := coordinator.New(coordinator.Config{ID: c.String("id"), Dir: dir, Listen: c.String("listen"), Peers: peers,
		PacketConn: pc, RaftListener: ln,
		Validation: val,
		Join:       join, JoinKey: joinKey, Aggregator: c.Bool("aggregator"), Identity: id, Raft: rc, HTTP: c.String("http")})
	if err != nil {
		return err
	}
	defer srv.Close()
	ctx, stop := signal.NotifyContext(c.Context, os.Interrupt, syscall.SIGTERM)
	defer stop()
	slog.Info("coordinator running", "id", c.String("id"), "listen", srv.Addr(), "key", srv.KeyID(), "dir", dir, "aggregator", c.Bool("aggregator"))
	return srv.Run(ctx)
}

// validationData sorts the coordinator's --data paths by kind: text (a file or a directory of
// .txt files) for language models, the others (Fashion-MNIST directories, "embedded") for image
// models; at most one of each.
func validationData(paths []string) (coordinator.ValidationConfig, error) {
	var cfg coordinator.ValidationConfig
	for _, p := range paths {
		if p == "" {
			return cfg, errors.New("--data: empty path")
		}
		slot, kind := &cfg.Data, "image"
		if isTextData(p) {
			slot, kind = &cfg.Text, "text"
		}
		if *slot != "" {
			return cfg, fmt.Errorf("--data %s and --data %s are both %s data: give at most one of each kind", *slot, p, kind)
		}
		*slot = p
	}
	return cfg, nil
}

// parseListenFDs parses --listen-fds "UDP,TCP" (nil when empty): two distinct descriptors past
// stdin, stdout and stderr.
func parseListenFDs(s string) ([]int, error) {
	if s == "" {
		return nil, nil
	}
	u, t, ok := strings.Cut(s, ",")
	fu, err1 := strconv.Atoi(u)
	ft, err2 := strconv.Atoi(t)
	if !ok || err1 != nil || err2 != nil || fu < 3 || ft < 3 || fu == ft {
		return nil, fmt.Errorf("coordinator: --listen-fds %q: want UDP,TCP: two distinct inherited file descriptors, 3 or more (e.g. 3,4)", s)
	}
	return []int{fu, ft}, nil
}

// inheritSockets takes over the inherited descriptors of a bound UDP socket and a listening TCP
// socket; the coordinator owns and closes them.
func inheritSockets(udpFD, tcpFD int) (net.PacketConn, net.Listener, error) {
	uf := os.NewFile(uintptr(udpFD), "listen-fd-udp")
	defer uf.Close() // FilePacketConn and FileListener hold duplicates
	tf := os.NewFile(uintptr(tcpFD), "listen-fd-tcp")
	defer tf.Close()
	pc, err := net.FilePacketConn(uf)
	if err != nil {
		return nil, nil, fmt.Errorf("coordinator: --listen-fds: fd %d: %w", udpFD, err)
	}
	if _, ok := pc.(*net.UDPConn); !ok {
		pc.Close()
		return nil, nil, fmt.Errorf("coordinator: --listen-fds: fd %d is not a UDP socket", udpFD)
	}
	ln, err := net.FileListener(tf)
	if err != nil {
		pc.Close()
		return nil, nil, fmt.Errorf("coordinator: --listen-fds: fd %d: %w", tcpFD, err)
	}
	if _, ok := ln.(*net.TCPListener); !ok {
		pc.Close()
		ln.Close()
		return nil, nil, fmt.Errorf("coordinator: --listen-fds: fd %d is not a listening TCP socket", tcpFD)
	}
	return pc, ln, nil
}

// clientFlags are shared by every command that talks to the coordinators.
func clientFlags(write bool) []cli.Flag {
	fs := []cli.Flag{
		&cli.StringFlag{Name: "coordinator", Required: true, Usage: "coordinator address(es), comma-separated", EnvVars: envVars("coordinator")},
		&cli.DurationFlag{Name: "timeout", Value: 30 * time.Second, Usage: "give up after this long", EnvVars: envVars("timeout")},
	}
	key := &cli.StringFlag{Name: "key", Usage: "member key file (from cohort keygen); reads may use a throwaway key", EnvVars: envVars("key")}
	if write {
		key.Required = true
		fs = append(fs, &cli.StringFlag{Name: "member-name", Usage: "member name used when registering (default: the key file's base name)", EnvVars: envVars("member_name")})
	}
	return append(fs, key)
}

// coordinatorAddrs reads --coordinator: one or more HOST:PORT, each checked
// (coordinator.CheckAddr) so that a typo fails at once instead of after the retries.
func coordinatorAddrs(c *cli.Context) ([]string, error) {
	addrs := splitAddrs(c.String("coordinator"))
	if len(addrs) == 0 {
		return nil, fmt.Errorf("--coordinator %q: no address (want HOST:PORT[,HOST:PORT...])", c.String("coordinator"))
	}
	for _, a := range addrs {
		if err := client.CheckAddr(a); err != nil {
			return nil, fmt.Errorf("--coordinator: %w", err)
		}
	}
	return addrs, nil
}

func dialClient(c *cli.Context) (*client.Client, error) {
	addrs, err := coordinatorAddrs(c)
	if err != nil {
		return nil, err
	}
	if d := c.Duration("timeout"); d <= 0 {
		return nil, fmt.Errorf("--timeout %s: want a positive duration, e.g. 30s", d)
	}
	var id *transport.Identity
	if path := c.String("key"); path != "" {
		id, err = transport.LoadKey(path)
	} else {
		id, err = transport.GenerateIdentity(rand.Reader)
	}
	if err != nil {
		return nil, err
	}
	return client.Dial(client.Config{Addrs: addrs, Identity: id, Timeout: c.Duration("timeout")})
}

// registeredClient dials and registers the member if needed.
func registeredClient(c *cli.Context) (*client.Client, error) {
	cl, err := dialClient(c)
	if err != nil {
		return nil, err
	}
	name := c.String("member-name")
	if name == "" {
		name = trimExt(filepath.Base(c.String("key")))
	}
	if err := cl.EnsureRegistered(c.Context, name, []string{name}); err != nil {
		cl.Close()
		return nil, fmt.Errorf("registering member %q: %w", name, err)
	}
	return cl, nil
}

// pending reports an operator command that awaits more operators' signatures, if it does.
func pending(c *cli.Context, what string, res consensus.Result) bool {
	if res.Status != "pending" {
		return false
	}
	fmt.Fprintf(c.App.Writer, "%s: signed (%d signature(s) so far); it takes effect once a majority of the coordinators' operators have signed the same\n", what, res.ID)
	return true
}

func approveCoordinatorCommand() *cli.Command {
	return &cli.Command{
		Name:  "approve-coordinator",
		Usage: "approve a new coordinator's key (an operator command: a majority of operators must sign it)",
		Description: `Each operator of a majority runs, with its own coordinator's node key:
     cohort approve-coordinator --coordinator KEYID@127.0.0.1:7001 --key ./c1/node.key --name c4 --node-id NEWKEYID
   The new node then starts with: cohort coordinator --id c4 ... --join KEYID@127.0.0.1:7001
   (add --aggregator to have it join as an aggregator, a non-voter).`,
		Flags: operatorFlags(
			&cli.StringFlag{Name: "name", Required: true, Usage: "the new node's --id (its raft server ID)", EnvVars: envVars("name")},
			&cli.StringFlag{Name: "node-id", Required: true, Usage: "the new node's key ID (cohort keygen prints it)", EnvVars: envVars("node_id")},
		),
		Action: func(c *cli.Context) error {
			if _, err := transport.ParseNodeID(c.String("node-id")); err != nil {
				return fmt.Errorf("approve-coordinator: --node-id: %w", err)
			}
			res, err := operatorSubmit(c, "approve-coordinator", &consensus.ApproveCoordinatorBody{ID: c.String("node-id"), Name: c.String("name")})
			if err != nil || pending(c, "approve-coordinator", res) {
				return err
			}
			fmt.Fprintf(c.App.Writer, "approve-coordinator: %s may now join as %s\n", c.String("node-id"), report.Escape(c.String("name")))
			return nil
		},
	}
}

func removeCoordinatorCommand() *cli.Command {
	return &cli.Command{
		Name:  "remove-coordinator",
		Usage: "remove a coordinator and its Raft voter, e.g. a dead one (a majority of operators must sign it)",
		Flags: operatorFlags(
			&cli.StringFlag{Name: "node-id", Required: true, Usage: "the key ID of the coordinator to remove (cohort status lists them)", EnvVars: envVars("node_id")},
		),
		Action: func(c *cli.Context) error {
			if _, err := transport.ParseNodeID(c.String("node-id")); err != nil {
				return fmt.Errorf("remove-coordinator: --node-id: %w", err)
			}
			res, err := operatorSubmit(c, "remove-coordinator", &consensus.ApproveCoordinatorBody{ID: c.String("node-id"), Remove: true})
			if err != nil || pending(c, "remove-coordinator", res) {
				return err
			}
			fmt.Fprintf(c.App.Writer, "remove-coordinator: %s removed; the leader drops its voter\n", c.String("node-id"))
			return nil
		},
	}
}

func proposeCommand() *cli.Command {
	return &cli.Command{
		Name:  "propose",
		Usage: "propose a community model; members vote on it",
		Description: `With --data the proposal records the hash of its validation split (the Fashion-MNIST test
   split, or for a gpt model the last 10 % of the text), capped at --val-samples: every coordinator
   must then be started with the same data (cohort coordinator --data, --val-samples), or its
   validator refuses the proposal and its rounds go unscored.

   Example:
     cohort propose --coordinator 127.0.0.1:7001 --key alice.key --name shakespeare --model gpt:2-64-4-64 \
       --data path/to/input.txt --rounds 20 --inner-steps 50`,
		Flags: append(append(clientFlags(true),
			&cli.StringFlag{Name: "name", Required: true, Usage: "proposal name, e.g. fmnist-mlp", EnvVars: envVars("proposal_name")},
			&cli.StringFlag{Name: "model", Value: "mlp:784-256-10", Usage: "model spec", EnvVars: envVars("model")},
			&cli.StringFlag{Name: "dataset", Usage: "dataset reference (default: a description of --data, else fashion-mnist or the embedded play)", EnvVars: envVars("dataset")},
			&cli.StringFlag{Name: "validation-hash", Usage: "hex SHA-256 of the held-out validation split (computed from --data if given)", EnvVars: envVars("validation_hash")},
			&cli.StringFlag{Name: "data", Usage: "the validation data the coordinators hold: a Fashion-MNIST directory or \"embedded\", or for gpt models a text file or directory of .txt files; sets the validation hash", EnvVars: envVars("data")},
			&cli.IntFlag{Name: "val-samples", Value: 1000, Usage: "validation samples, as the coordinators' --val-samples", EnvVars: envVars("val_samples")},
			&cli.UintFlag{Name: "rounds", Value: uint(spec.Defaults.Rounds), Usage: "outer rounds", EnvVars: envVars("rounds")},
			&cli.UintFlag{Name: "inner-steps", Value: uint(spec.Defaults.InnerSteps), Usage: "inner steps H", EnvVars: envVars("inner_steps")},
			&cli.StringFlag{Name: "codec", Value: spec.Defaults.Codec, Usage: "pseudo-gradient codec", EnvVars: envVars("codec")},
			downCodecFlag(),
			outerLRFlag(), outerMomentumFlag(), errorDecayFlag(),
			&cli.Uint64Flag{Name: "reward-pool", Value: 1_000_000, Usage: "reward pool (integer units)", EnvVars: envVars("reward_pool")},
			&cli.UintFlag{Name: "min-members", Value: 2, Usage: "members needed before the first round (at least 1)", EnvVars: envVars("min_members")},
			&cli.UintFlag{Name: "max-members", Usage: "members the cohort takes at most (0: the cluster's limit)", EnvVars: envVars("max_members")},
			&cli.Float64Flag{Name: "quorum", Value: 0.5, Usage: "share of the eligible vote weight that must vote", EnvVars: envVars("quorum")},
			&cli.Float64Flag{Name: "threshold", Value: 0.5, Usage: "share of the cast weight that must vote yes", EnvVars: envVars("threshold")},
			&cli.DurationFlag{Name: "voting-period", Value: time.Minute, Usage: "how long votes are open", EnvVars: envVars("voting_period")},
			&cli.BoolFlag{Name: "json", Usage: "print the result as JSON", EnvVars: envVars("json")},
		), innerFlags()...),
		Action: func(c *cli.Context) error {
			if c.NArg() > 0 {
				return fmt.Errorf("propose: unexpected argument %q", c.Args().First())
			}
			if err := checkFlags(c, "propose", append([]bound{between("rounds", 1, spec.MaxRounds), between("inner-steps", 1, spec.MaxInnerSteps),
				between("min-members", 1, math.MaxUint32), between("val-samples", 1, maxValSamples)}, innerBounds()...)...); err != nil {
				return err
			}
			var vh []byte
			if s := c.String("validation-hash"); s != "" {
				b, err := hex.DecodeString(s)
				if err != nil || len(b) != 32 {
					return fmt.Errorf("propose: --validation-hash %q: want 64 hex digits", s)
				}
				vh = b
			}
			dataset := c.String("dataset")
			if data := c.String("data"); data != "" {
				h, desc, err := validationOf(c.String("model"), data, c.Int("val-samples"))
				if err != nil {
					return fmt.Errorf("propose: --data %s: %w", data, err)
				}
				if vh != nil && string(vh) != string(h[:]) {
					return fmt.Errorf("propose: --validation-hash %x is not the hash %x of --data %s's validation split", vh, h, data)
				}
				vh = h[:]
				if dataset == "" {
					dataset = desc
				}
			}
			if dataset == "" {
				dataset = defaultDataset(c.String("model"))
			}
			q, th := c.Float64("quorum"), c.Float64("threshold")
			if !(q >= 0 && q <= 1) || !(th >= 0 && th <= 1) {
				return fmt.Errorf("propose: --quorum %v and --threshold %v must lie in [0, 1]", q, th)
			}
			for _, f := range []struct {
				flag string
				v    float64
			}{{"quorum", q}, {"threshold", th}} {
				if f.v > 0 && uint32(f.v*10000+0.5) == 0 {
					return fmt.Errorf("propose: --%s %v is below one basis point (0.0001): it would mean 0", f.flag, f.v)
				}
			}
			if vp := c.Duration("voting-period"); vp < time.Millisecond {
				return fmt.Errorf("propose: --voting-period %s: want at least 1ms", vp)
			}
			params := withInner(c, consensus.Hyperparams{InnerSteps: uint32(c.Uint("inner-steps")), Rounds: uint32(c.Uint("rounds")), Codec: c.String("codec"), DownCodec: c.String("down-codec"),
				OuterLR: decimal(c.Float64("outer-lr")), OuterMomentum: decimal(c.Float64("outer-momentum")), ErrorDecay: decimal(c.Float64("ef-decay"))})
			if err := spec.Check(params); err != nil {
				return fmt.Errorf("propose: %w", err)
			}
			cl, err := registeredClient(c)
			if err != nil {
				return fmt.Errorf("propose: %w", err)
			}
			defer cl.Close()
			res, err := cl.Submit(c.Context, &consensus.ProposeBody{
				Name: c.String("name"), Model: c.String("model"), Dataset: dataset, ValidationHash: vh,
				Params:     params,
				RewardPool: c.Uint64("reward-pool"), MinMembers: uint32(c.Uint("min-members")), MaxMembers: uint32(c.Uint("max-members")),
				QuorumBP: uint32(q*10000 + 0.5), ThresholdBP: uint32(th*10000 + 0.5), VotingPeriodMs: c.Duration("voting-period").Milliseconds(),
			})
			if err != nil {
				return fmt.Errorf("propose: %w", err)
			}
			if c.Bool("json") {
				return printJSON(c.App.Writer, map[string]any{"proposal": res.ID, "status": res.Status, "duplicate": res.Duplicate})
			}
			fmt.Fprintf(c.App.Writer, "proposal %d (%s) is %s; voting closes in %s\n", res.ID, report.Escape(c.String("name")), report.Escape(string(res.Status)), c.Duration("voting-period"))
			return nil
		},
	}
}

// validationOf is the hash of model's validation split at data, capped at n samples, as the
// coordinators' validators load it (trainer.ValidationFor), and a description of it for the
// proposal's dataset reference.
func validationOf(model, data string, n int) ([32]byte, string, error) {
	val, err := trainer.ValidationFor(model, data, n)
	if err != nil {
		return [32]byte{}, "", err
	}
	h := val.Hash()
	name := filepath.Base(filepath.Clean(data))
	if len(name) > 64 {
		name = strings.ToValidUTF8(name[:64], "")
	}
	kind := "test split"
	if isTextData(data) {
		kind = "last 10 %"
	}
	return h, fmt.Sprintf("%s (validation: %s, %d samples, %x)", name, kind, val.Len(), h[:6]), nil
}

// defaultDataset is a proposal's dataset reference when neither --dataset nor --data is given.
func defaultDataset(model string) string {
	if model == "mlp" || strings.HasPrefix(model, "mlp:") {
		return "fashion-mnist"
	}
	return "embedded play"
}

func registerCommand() *cli.Command {
	return &cli.Command{
		Name:  "register",
		Usage: "register a member key (every write registers it first); operators can then grant it votes",
		Flags: clientFlags(true),
		Action: func(c *cli.Context) error {
			cl, err := registeredClient(c)
			if err != nil {
				return fmt.Errorf("register: %w", err)
			}
			defer cl.Close()
			fmt.Fprintf(c.App.Writer, "member %s is registered\n", cl.ID())
			return nil
		},
	}
}

// operatorFlags are those of the operator commands: they are signed with a coordinator's node key.
func operatorFlags(fs ...cli.Flag) []cli.Flag {
	return append([]cli.Flag{
		&cli.StringFlag{Name: "coordinator", Required: true, Usage: "coordinator address(es), comma-separated", EnvVars: envVars("coordinator")},
		&cli.DurationFlag{Name: "timeout", Value: 30 * time.Second, Usage: "give up after this long", EnvVars: envVars("timeout")},
		&cli.StringFlag{Name: "key", Required: true, Usage: "a registered coordinator's node key (DIR/node.key of cohort coordinator)", EnvVars: envVars("key")},
	}, fs...)
}

// operatorSubmit submits an operator command signed with the node key of --key.
func operatorSubmit(c *cli.Context, what string, body consensus.Body) (consensus.Result, error) {
	cl, err := dialClient(c)
	if err != nil {
		return consensus.Result{}, fmt.Errorf("%s: %w", what, err)
	}
	defer cl.Close()
	res, err := cl.Submit(c.Context, body)
	if err != nil {
		return consensus.Result{}, fmt.Errorf("%s: %w", what, err)
	}
	return res, nil
}

func fundCommand() *cli.Command {
	return &cli.Command{
		Name:  "fund",
		Usage: "operator: credit the treasury that passed proposals take their reward pools from (a majority of operators must sign it)",
		Flags: operatorFlags(&cli.Uint64Flag{Name: "amount", Required: true, Usage: "amount to credit (integer units, > 0)", EnvVars: envVars("amount")}),
		Action: func(c *cli.Context) error {
			if c.Uint64("amount") == 0 {
				return errors.New("fund: --amount must be positive")
			}
			res, err := operatorSubmit(c, "fund", &consensus.FundBody{Amount: c.Uint64("amount")})
			if err != nil || pending(c, "fund", res) {
				return err
			}
			fmt.Fprintf(c.App.Writer, "funded %d; the treasury holds %d\n", c.Uint64("amount"), res.Amount)
			return nil
		},
	}
}

func grantCommand() *cli.Command {
	return &cli.Command{
		Name:  "grant",
		Usage: "operator: set the vote weight granted to a member (0 takes it back; a majority of operators must sign it); fresh keys weigh nothing",
		Flags: operatorFlags(
			&cli.StringSliceFlag{Name: "member", Required: true, Usage: "member ID (hex, as printed by keygen); repeat it, or give a comma-separated list, to grant many members in one motion", EnvVars: envVars("member")},
			&cli.Uint64Flag{Name: "votes", Required: true, Usage: "vote weight to grant", EnvVars: envVars("votes")},
		),
		Action: func(c *cli.Context) error {
			ids := slices.Clone(c.StringSlice("member"))
			slices.Sort(ids)
			ids = slices.Compact(ids)
			if len(ids) > consensus.MaxListLen {
				return fmt.Errorf("grant: %d members, at most %d in one motion", len(ids), consensus.MaxListLen)
			}
			res, err := operatorSubmit(c, "grant", &consensus.GrantBody{Member: ids[0], Votes: c.Uint64("votes"), More: ids[1:]})
			if err != nil || pending(c, "grant", res) {
				return err
			}
			if len(ids) == 1 {
				fmt.Fprintf(c.App.Writer, "member %s is granted %d votes\n", res.Member, res.Amount)
			} else {
				fmt.Fprintf(c.App.Writer, "%d members are granted %d votes each\n", len(ids), res.Amount)
			}
			return nil
		},
	}
}

func voteCommand() *cli.Command {
	return &cli.Command{
		Name:  "vote",
		Usage: "vote on a proposal (--yes or --no)",
		Flags: append(clientFlags(true),
			&cli.Uint64Flag{Name: "proposal", Required: true, Usage: "proposal ID", EnvVars: envVars("proposal")},
			&cli.BoolFlag{Name: "yes", Usage: "vote yes"},
			&cli.BoolFlag{Name: "no", Usage: "vote no"},
		),
		Action: func(c *cli.Context) error {
			if c.Bool("yes") == c.Bool("no") {
				return errors.New("vote: give exactly one of --yes and --no")
			}
			if c.Uint64("proposal") == 0 {
				return errors.New("vote: --proposal must be a proposal ID (1 or more)")
			}
			cl, err := registeredClient(c)
			if err != nil {
				return fmt.Errorf("vote: %w", err)
			}
			defer cl.Close()
			res, err := cl.Submit(c.Context, &consensus.VoteBody{Proposal: c.Uint64("proposal"), Yes: c.Bool("yes")})
			if err != nil {
				return fmt.Errorf("vote: %w", err)
			}
			fmt.Fprintf(c.App.Writer, "voted %s on proposal %d (%s)\n", map[bool]string{true: "yes", false: "no"}[c.Bool("yes")], res.ID, report.Escape(string(res.Status)))
			return nil
		},
	}
}

func proposalsCommand() *cli.Command {
	return &cli.Command{
		Name:  "proposals",
		Usage: "list proposals and their votes",
		Flags: append(clientFlags(false), &cli.BoolFlag{Name: "json", Usage: "print JSON", EnvVars: envVars("json")}),
		Action: func(c *cli.Context) error {
			cl, err := dialClient(c)
			if err != nil {
				return fmt.Errorf("proposals: %w", err)
			}
			defer cl.Close()
			r, err := cl.All(c.Context, protocol.Query{What: protocol.QueryProposals}, maxListed)
			if err != nil {
				return fmt.Errorf("proposals: %w", err)
			}
			if c.Bool("json") {
				return printJSON(c.App.Writer, proposalsJSON(r.Proposals))
			}
			return writeProposals(c.App.Writer, r.Proposals)
		},
	}
}

// writeProposals prints proposals as a table, their names escaped (cell).
func writeProposals(w io.Writer, ps []consensus.Proposal) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tNAME\tMODEL\tROUNDS\tCODEC\tPOOL\tSTATUS\tVOTES\tYES\tNO\tDEADLINE\tCOHORT")
	for _, p := range ps {
		yes, no := 0, 0
		for _, v := range p.Votes {
			if v.Yes {
				yes++
			} else {
				no++
			}
		}
		cohort := "-"
		if p.Cohort != 0 {
			cohort = strconv.FormatUint(p.Cohort, 10)
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%d\t%s\t%d\t%s\t%d\t%d\t%d\t%s\t%s\n", p.ID, cell(p.Name), cell(p.Model), p.Params.Rounds, cell(p.Params.Codec),
			p.RewardPool, cell(string(p.Status)), len(p.Votes), yes, no, time.UnixMilli(p.Deadline).UTC().Format(time.RFC3339), cohort)
	}
	return tw.Flush()
}

func proposalsJSON(ps []consensus.Proposal) []map[string]any {
	out := []map[string]any{}
	for _, p := range ps {
		votes := []map[string]any{}
		for _, v := range p.Votes {
			votes = append(votes, map[string]any{"member": v.Member, "yes": v.Yes, "weight": v.Weight})
		}
		out = append(out, map[string]any{
			"id": p.ID, "name": p.Name, "proposer": p.Proposer, "model": p.Model, "dataset": p.Dataset,
			"inner_steps": p.Params.InnerSteps, "rounds": p.Params.Rounds, "codec": p.Params.Codec, "down_codec": spec.DownCodec(p.Params),
			"outer_lr": p.Params.OuterLR, "outer_momentum": p.Params.OuterMomentum, "ef_decay": p.Params.ErrorDecay,
			"inner_lr": p.Params.InnerLR, "weight_decay": p.Params.WeightDecay, "warmup": p.Params.Warmup, "lr_schedule": p.Params.Schedule, "clip": p.Params.ClipNorm,
			"reward_pool": p.RewardPool, "min_members": p.MinMembers, "quorum_bp": p.QuorumBP, "threshold_bp": p.ThresholdBP,
			"deadline_ms": p.Deadline, "status": p.Status, "votes": votes, "cohort": p.Cohort,
			"max_members": p.MaxMembers, "reason": p.Reason,
		})
	}
	return out
}

func statusCommand() *cli.Command {
	return &cli.Command{
		Name:  "status",
		Usage: "show the coordinator cluster: members, leader, log index, state hash, cohorts",
		Flags: append(clientFlags(false),
			&cli.BoolFlag{Name: "json", Usage: "print JSON (one object per coordinator queried)", EnvVars: envVars("json")},
			&cli.BoolFlag{Name: "all", Usage: "query every address given, not just the first that answers", EnvVars: envVars("all")},
		),
		Action: func(c *cli.Context) error {
			cl, err := dialClient(c)
			if err != nil {
				return fmt.Errorf("status: %w", err)
			}
			defer cl.Close()
			var sts []protocol.Status
			if c.Bool("all") {
				addrs, err := coordinatorAddrs(c)
				if err != nil {
					return fmt.Errorf("status: %w", err)
				}
				for _, a := range addrs {
					_, addr, err := transport.ParsePinned(a) // the client holds the pin: ask the address
					if err != nil {
						return fmt.Errorf("status: --coordinator: %w", err)
					}
					ctx, cancel := context.WithTimeout(c.Context, 3*time.Second)
					r, err := cl.QueryAt(ctx, addr, protocol.Query{What: protocol.QueryStatus})
					cancel()
					if err == nil && r.Status == nil {
						err = errors.New("empty answer")
					}
					if err != nil {
						sts = append(sts, protocol.Status{Addr: a, Role: "unreachable: " + err.Error()})
						continue
					}
					sts = append(sts, *r.Status)
				}
			} else {
				r, err := cl.Query(c.Context, protocol.Query{What: protocol.QueryStatus})
				if err != nil {
					return fmt.Errorf("status: %w", err)
				}
				if r.Status == nil {
					return errors.New("status: the coordinator's answer is empty")
				}
				sts = append(sts, *r.Status)
			}
			if c.Bool("json") {
				if len(sts) == 1 && !c.Bool("all") {
					return printJSON(c.App.Writer, sts[0])
				}
				return printJSON(c.App.Writer, sts)
			}
			for _, st := range sts {
				printStatus(c.App.Writer, st)
			}
			return nil
		},
	}
}

// printStatus prints a coordinator's status; every string in it came from the coordinator and is
// escaped (report.Escape).
func printStatus(w io.Writer, st protocol.Status) {
	e := report.Escape
	if st.ID == "" {
		fmt.Fprintf(w, "%s: %s\n", e(st.Addr), e(st.Role))
		return
	}
	role := e(st.Role)
	if st.Aggregator {
		role += " (aggregator)"
	}
	fmt.Fprintf(w, "node %s at %s: %s, term %s, leader %s (%s)\n", e(st.ID), e(st.Addr), role, e(st.Term), e(st.LeaderID), e(st.LeaderAddr))
	fmt.Fprintf(w, "  log index %s, applied %d, state hash %s\n", e(st.LastIndex), st.AppliedIndex, e(st.StateHash[:min(16, len(st.StateHash))]))
	var servers, aggregators []string
	for _, s := range st.Servers {
		if s.Voter() {
			servers = append(servers, e(s.ID)+"="+e(s.Addr))
		} else {
			aggregators = append(aggregators, e(s.ID)+"="+e(s.Addr))
		}
	}
	fmt.Fprintf(w, "  voters: %s\n", strings.Join(servers, " "))
	if len(aggregators) > 0 {
		fmt.Fprintf(w, "  aggregators: %s\n", strings.Join(aggregators, " "))
	}
	fmt.Fprintf(w, "  registered coordinators: %d, members: %d, proposals: %d\n", len(st.Coordinators), st.Members, st.Proposals)
	if len(st.Coordinators) > 0 { // the keys to pin (--coordinator KEYID@HOST:PORT) and to approve or remove by
		keys := make([]string, len(st.Coordinators))
		for i, k := range st.Coordinators {
			keys[i] = e(k)
		}
		fmt.Fprintf(w, "  coordinator keys: %s\n", strings.Join(keys, " "))
	}
	for _, co := range st.Cohorts {
		fmt.Fprintf(w, "  cohort %d (proposal %d): %s, %d members, round %d\n", co.ID, co.Proposal, e(co.Status), co.Members, co.CurrentRound)
	}
}

// cell is a table cell of text from the coordinators (names chosen by strangers): escaped
// (report.Escape), or "-" when empty.
func cell(s string) string {
	if s == "" {
		return "-"
	}
	return report.Escape(s)
}

func printJSON(w io.Writer, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(w, string(b))
	return err
}

func splitAddrs(s string) []string {
	var addrs []string
	for _, a := range strings.Split(s, ",") {
		if a = strings.TrimSpace(a); a != "" {
			addrs = append(addrs, a)
		}
	}
	return addrs
}

func trimExt(name string) string { return strings.TrimSuffix(name, filepath.Ext(name)) }

// decimal writes a flag's value as the decimal string a proposal carries.
func decimal(v float64) string { return strconv.FormatFloat(v, 'g', -1, 64) }

// The outer step's and error feedback's flags default to spec.Defaults: the same for
// `cohort propose`, `cohort simulate` and `cohort train`.
func outerLRFlag() cli.Flag {
	return &cli.Float64Flag{Name: "outer-lr", Value: defaultFloat(spec.Defaults.OuterLR), Usage: "outer Nesterov learning rate η", EnvVars: envVars("outer_lr")}
}

func outerMomentumFlag() cli.Flag {
	return &cli.Float64Flag{Name: "outer-momentum", Value: defaultFloat(spec.Defaults.OuterMomentum), Usage: "outer Nesterov momentum μ (0: none)", EnvVars: envVars("outer_momentum")}
}

func errorDecayFlag() cli.Flag {
	return &cli.Float64Flag{Name: "ef-decay", Value: defaultFloat(spec.Defaults.ErrorDecay), Usage: "error-feedback decay β: each peer's residual becomes β·e + Δ each round (1: plain error feedback)", EnvVars: envVars("ef_decay")}
}

// defaultFloat parses a decimal of spec.Defaults (spec's tests parse them all).
func defaultFloat(s string) float64 {
	v, err := strconv.ParseFloat(s, 64)
	if err != nil {
		panic("cohort: spec.Defaults holds a decimal that does not parse: " + s)
	}
	return v
}
