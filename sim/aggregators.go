package sim

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"time"

	"github.com/cohortlab/cohort/client"
	"github.com/cohortlab/cohort/consensus"
	"github.com/cohortlab/cohort/coordinator"
	"github.com/cohortlab/cohort/internal/netutil"
)

// startAggregators adds cfg.Aggregators aggregators (a1, a2, …: coordinators that join as Raft
// non-voters) to the running cluster of voters, as operators would: a majority of the voters'
// operators approves every aggregator's key first, then each starts with --join through the
// first voter. base is a voter's configuration, whose settings (rounds, validation, limits,
// Raft timeouts) the aggregators share. It returns once every aggregator is registered and
// followed the log; the caller stops them (node.cancel, then srv.Close).
func startAggregators(ctx context.Context, cfg Config, dir string, log *slog.Logger, voters []consensus.Peer, base coordinator.Config) ([]*node, error) {
	if cfg.Aggregators == 0 {
		return nil, nil
	}
	var addrs []string
	for _, p := range voters {
		addrs = append(addrs, p.Addr)
	}
	names := make([]string, cfg.Aggregators)
	for i := range names {
		names[i] = fmt.Sprintf("a%d", i+1)
	}
	// Every approval before the first join: each aggregator that registers raises the majority.
	for i := 0; i < len(voters)/2+1; i++ {
		id, err := identity(cfg.Seed, voters[i].ID)
		if err != nil {
			return nil, err
		}
		op, err := client.Dial(client.Config{Addrs: addrs, Identity: id, Logger: log})
		if err != nil {
			return nil, err
		}
		for _, name := range names {
			aid, err := identity(cfg.Seed, name)
			if err != nil {
				op.Close()
				return nil, err
			}
			if _, err := op.Submit(ctx, &consensus.ApproveCoordinatorBody{ID: aid.NodeID().String(), Name: name}); err != nil {
				op.Close()
				return nil, fmt.Errorf("approve aggregator %s: %w", name, err)
			}
		}
		op.Close()
	}
	socks, err := netutil.ListenN(cfg.Aggregators)
	if err != nil {
		return nil, err
	}
	var nodes []*node
	fail := func(err error) ([]*node, error) {
		for _, n := range nodes {
			n.cancel()
			<-n.done
			n.srv.Close()
		}
		for _, s := range socks {
			s.Close()
		}
		return nil, err
	}
	for i, name := range names {
		id, err := identity(cfg.Seed, name)
		if err != nil {
			return fail(err)
		}
		c := base
		c.ID, c.Dir, c.Listen, c.PacketConn, c.RaftListener = name, filepath.Join(dir, name), socks[i].Addr(), socks[i].UDP, socks[i].TCP
		c.Peers, c.Join, c.JoinKey, c.Aggregator, c.Identity = nil, voters[0].Addr, voters[0].Key, true, id
		srv, err := coordinator.New(c)
		if err != nil {
			return fail(fmt.Errorf("aggregator %s: %w", name, err))
		}
		nctx, cancel := context.WithCancel(ctx)
		n := &node{srv: srv, cancel: cancel, done: make(chan struct{})}
		go func() { defer close(n.done); srv.Run(nctx) }()
		nodes = append(nodes, n)
	}
	want := len(voters) + cfg.Aggregators
	if err := waitUntil(ctx, 30*time.Second, func() bool {
		for _, n := range nodes {
			if st := n.srv.Status(); len(st.Coordinators) != want || len(st.Servers) != want {
				return false
			}
		}
		return true
	}); err != nil {
		return fail(fmt.Errorf("aggregators did not join: %w", err))
	}
	log.Info("aggregators joined", "aggregators", cfg.Aggregators, "voters", len(voters))
	return nodes, nil
}
