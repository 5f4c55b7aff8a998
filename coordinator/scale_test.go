package coordinator

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/cohortlab/cohort/client"
	"github.com/cohortlab/cohort/consensus"
	"github.com/cohortlab/cohort/protocol"
	"github.com/cohortlab/cohort/transport"
)

// A cluster of 700 members answers every query and takes every write: the member list, the
// largest reply, is read a page at a time and a member's registration check is a point query.
// (With the whole list in one reply, 700 members were a 72 KB frame header, and every client's
// registration check failed.)
func TestManyMembersArePagedNotSentWhole(t *testing.T) {
	const members = 700
	c := startClusterWith(t, 3, func(cfg *Config) {
		cfg.Limits.RegisterRate, cfg.Limits.SourceRate = -1, -1 // every member registers from 127.0.0.1
		cfg.Transport = transport.Config{MaxConnsPerSource: -1, MaxServingPerSource: -1}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	start := time.Now()
	const lanes = 32
	errs := make([]error, lanes)
	var wg sync.WaitGroup
	for lane := range lanes {
		wg.Go(func() {
			for i := lane; i < members && errs[lane] == nil; i += lanes {
				name := fmt.Sprintf("m%d", i)
				cl, err := client.Dial(client.Config{Addrs: c.addrs, Identity: testIdentity(t, name), Timeout: 30 * time.Second})
				if err != nil {
					errs[lane] = err
					return
				}
				errs[lane] = cl.EnsureRegistered(ctx, name, []string{name})
				cl.Close()
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d members registered in %v", members, time.Since(start).Round(time.Millisecond))

	alice := newClient(t, c, "alice")
	if err := alice.EnsureRegistered(ctx, "alice", []string{"alice"}); err != nil {
		t.Fatalf("registering member %d: %v", members+1, err)
	}
	if err := alice.EnsureRegistered(ctx, "alice", []string{"alice"}); err != nil {
		t.Fatalf("registering again (a no-op): %v", err)
	}
	r, err := alice.Query(ctx, protocol.Query{What: protocol.QueryMembers, Linearizable: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Members) != protocol.DefaultPage || r.Total != members+1 {
		t.Fatalf("first page: %d members of %d, want %d of %d", len(r.Members), r.Total, protocol.DefaultPage, members+1)
	}
	all, err := alice.All(ctx, protocol.Query{What: protocol.QueryMembers, Linearizable: true, Limit: 100}, 10_000)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, m := range all.Members {
		seen[m.ID] = true
	}
	if len(all.Members) != members+1 || len(seen) != members+1 || !seen[alice.ID()] {
		t.Fatalf("all pages: %d members, %d distinct, want %d", len(all.Members), len(seen), members+1)
	}
	if _, err := alice.All(ctx, protocol.Query{What: protocol.QueryMembers, Limit: 100}, 300); !errors.Is(err, protocol.ErrTooLarge) {
		t.Fatalf("reading 701 members with room for 300: %v, want ErrTooLarge", err)
	}
	if _, err := alice.Query(ctx, protocol.Query{What: protocol.QueryMembers, Limit: protocol.MaxPage + 1}); !errors.Is(err, protocol.ErrTooLarge) {
		t.Fatalf("a page over MaxPage: %v, want ErrTooLarge across the wire", err)
	}
	if _, err := alice.Query(ctx, protocol.Query{What: protocol.QueryMember, Member: "no-such-member"}); !errors.Is(err, consensus.ErrNotFound) {
		t.Fatalf("an unknown member: %v, want ErrNotFound", err)
	}
	m, err := alice.Query(ctx, protocol.Query{What: protocol.QueryMember, Member: alice.ID()})
	if err != nil || m.Member == nil || m.Member.Name != "alice" {
		t.Fatalf("alice by key: %+v, %v", m.Member, err)
	}
	if st := c.servers[0].Status(); st.Members != members+1 {
		t.Fatalf("status counts %d members", st.Members)
	}
}
