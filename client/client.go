package client

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/cohortlab/cohort/consensus"
	"github.com/cohortlab/cohort/internal/wirecode"
	"github.com/cohortlab/cohort/protocol"
	"github.com/cohortlab/cohort/transport"
)

// Config configures a Client. Zero values mean the documented defaults.
type Config struct {
	// Addrs are coordinator addresses, "HOST:PORT" or "KEYID@HOST:PORT"; any one will do, the
	// client tries them in turn. Required. A KEYID pins the address: the client talks only to a
	// node presenting that key there. The client also pins every coordinator a status reply
	// lists (protocol.Query with protocol.QueryStatus: its key at its raft address) unless already pinned, so a
	// client given one pinned address holds the whole cluster's keys after one status query.
	Addrs []string
	// Identity is the member's key. Required.
	Identity *transport.Identity
	// Timeout bounds one operation including retries; zero means 30s.
	Timeout time.Duration
	// Logger receives retry notes; nil means slog.Default().
	Logger *slog.Logger
	// PacketConn, if set, carries the client's QUIC traffic (a shaped link in simulations); the
	// client closes it. Nil means a fresh UDP socket on every local address (":0"), so that the
	// kernel picks the source address of the route to each coordinator, loopback or not.
	PacketConn net.PacketConn
	// PathMTUDiscovery has the client probe each coordinator's path for packets larger than
	// 1,280 bytes (transport.Config.FixedPacketSize off). Off by default: a member sends small
	// requests and one upload per slice a round over a connection per coordinator. The probes
	// (about 5.6 KB a connection) buy ~30 bytes of packet overhead per 7 KB sent afterwards: with
	// three coordinators and 20 rounds they pay for themselves only at uploads of ~250 KB a round.
	PathMTUDiscovery bool
}

// Client talks to a coordinator cluster on behalf of one member. It is safe for concurrent use: it signs requests with the
// member's key and retries the same signed envelope (same request ID) across coordinators until
// one applies it, so a request is applied exactly once even across leader changes.
type Client struct {
	cfg    Config
	ep     *transport.Endpoint
	signer *consensus.Signer
	log    *slog.Logger

	mu   sync.Mutex // guards next and pins; calls themselves run concurrently
	next int
	pins map[string]transport.NodeID // address -> the key the node there must have

	pool *transport.Pool // one connection per coordinator address

	stripeMu sync.Mutex
	stripes  transport.Stats // counters of closed transfer stripes
}

// Dial returns a client; connections are made lazily.
func Dial(cfg Config) (*Client, error) {
	if len(cfg.Addrs) == 0 {
		return nil, errors.New("no coordinator address (--coordinator)")
	}
	for _, a := range cfg.Addrs {
		if err := CheckAddr(a); err != nil {
			return nil, err
		}
	}
	if cfg.Identity == nil {
		return nil, errors.New("no member key (--key)")
	}
	if cfg.Timeout < 0 {
		return nil, fmt.Errorf("timeout %s is negative", cfg.Timeout)
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 30 * time.Second
	}
	pins := map[string]transport.NodeID{}
	addrs := make([]string, 0, len(cfg.Addrs))
	for _, a := range cfg.Addrs {
		key, addr, err := transport.ParsePinned(a)
		if err != nil {
			return nil, fmt.Errorf("coordinator address %q: %w", a, err)
		}
		if key != "" {
			id, _ := transport.ParseNodeID(key) // ParsePinned checked it
			pins[addr] = id
		}
		addrs = append(addrs, addr)
	}
	cfg.Addrs = addrs
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	var ep *transport.Endpoint
	var err error
	tc := transport.Config{Identity: cfg.Identity, FixedPacketSize: !cfg.PathMTUDiscovery}
	if cfg.PacketConn != nil {
		ep, err = transport.NewEndpoint(cfg.PacketConn, tc)
	} else {
		ep, err = transport.ListenAddr(":0", tc)
	}
	if err != nil {
		return nil, err
	}
	// Request IDs only grow: start above the wall clock in nanoseconds.
	sg, err := consensus.NewSigner(cfg.Identity.Key, uint64(time.Now().UnixNano()))
	if err != nil {
		ep.Close()
		return nil, err
	}
	return &Client{cfg: cfg, ep: ep, signer: sg, pool: transport.NewPool(ep), log: cfg.Logger, pins: pins}, nil
}

// Pin makes the client talk to addr only with the node of key ID key (an aggregator's address
// learnt from the cluster, say). It does not replace an existing pin.
func (c *Client) Pin(addr, key string) error {
	id, err := transport.ParseNodeID(key)
	if err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.pins[addr]; !ok {
		c.pins[addr] = id
	}
	return nil
}

// learn pins the coordinators a status reply lists, at their raft addresses.
func (c *Client) learn(st *protocol.Status) {
	if st == nil {
		return
	}
	for key, addr := range st.KeyAddrs() {
		c.Pin(addr, key)
	}
}

func (c *Client) pinOf(addr string) (transport.NodeID, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	id, ok := c.pins[addr]
	return id, ok
}

// CheckAddr reports whether addr is a coordinator address a client can dial: HOST:PORT with a
// port from 1 to 65535. A wrong one is refused at once rather than retried until the timeout.
func CheckAddr(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("coordinator address %q: want HOST:PORT, e.g. 127.0.0.1:7001: %w", addr, err)
	}
	if host == "" {
		return fmt.Errorf("coordinator address %q: no host (want HOST:PORT, e.g. 127.0.0.1:7001)", addr)
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 {
		return fmt.Errorf("coordinator address %q: port %q is not a number from 1 to 65535", addr, port)
	}
	return nil
}

// ID is the member ID of the client's key.
func (c *Client) ID() string { return c.signer.ID() }

// Close closes the client's connections (and its PacketConn).
func (c *Client) Close() error {
	c.pool.Close()
	err := c.ep.Close()
	if c.cfg.PacketConn != nil {
		c.cfg.PacketConn.Close()
	}
	return err
}

// Sign signs body with the member's key and the client's next request ID, without sending it
// (SubmitEnvelope sends it; an operator collects co-signatures first).
func (c *Client) Sign(body consensus.Body) (consensus.Envelope, error) { return c.signer.Sign(body) }

// Submit signs body and has the cluster apply it.
func (c *Client) Submit(ctx context.Context, body consensus.Body) (consensus.Result, error) {
	env, err := c.signer.Sign(body)
	if err != nil {
		return consensus.Result{}, err
	}
	return c.SubmitEnvelope(ctx, env)
}

// SubmitEnvelope submits an already signed envelope, retrying it unchanged until a coordinator
// answers with the outcome or the client's timeout passes.
func (c *Client) SubmitEnvelope(ctx context.Context, env consensus.Envelope) (consensus.Result, error) {
	req := transport.Message{Header: transport.Header{Type: protocol.MsgSubmit}}
	if err := req.SetBody(env); err != nil {
		return consensus.Result{}, err
	}
	reply, err := c.roundTrip(ctx, req, callLimit)
	if err != nil {
		return consensus.Result{}, err
	}
	var sr protocol.SubmitReply
	if err := reply.DecodeBody(&sr); err != nil {
		return consensus.Result{}, err
	}
	return sr.Result, nil
}

// Query asks one coordinator for read-only state.
func (c *Client) Query(ctx context.Context, q protocol.Query) (protocol.QueryReply, error) {
	req := transport.Message{Header: transport.Header{Type: protocol.MsgQuery}}
	if err := req.SetBody(q); err != nil {
		return protocol.QueryReply{}, err
	}
	limit := callLimit
	if q.What == protocol.QueryNextRound {
		limit = protocol.NextRoundWait + 2*time.Second // a long-poll; a dead node is found out this soon
	}
	reply, err := c.roundTrip(ctx, req, limit)
	if err != nil {
		return protocol.QueryReply{}, err
	}
	out, err := decodeQueryReply(reply.Payload)
	if err != nil {
		return protocol.QueryReply{}, err
	}
	c.learn(out.Status)
	return out, nil
}

// QueryAt asks the coordinator at addr (no failover): `cohort status` on one node.
func (c *Client) QueryAt(ctx context.Context, addr string, q protocol.Query) (protocol.QueryReply, error) {
	req := transport.Message{Header: transport.Header{Type: protocol.MsgQuery}}
	if err := req.SetBody(q); err != nil {
		return protocol.QueryReply{}, err
	}
	reply, err := c.callAddr(ctx, addr, req)
	if err != nil {
		return protocol.QueryReply{}, err
	}
	return decodeQueryReply(reply.Payload)
}

// decodeQueryReply decodes the payload of a MsgQuery reply, bounded before it allocates.
func decodeQueryReply(b []byte) (protocol.QueryReply, error) {
	var r protocol.QueryReply
	if len(b) > protocol.MaxQueryReply {
		return r, fmt.Errorf("%w: query reply of %d bytes, limit %d", protocol.ErrMalformed, len(b), protocol.MaxQueryReply)
	}
	if err := transport.DecodePayload(b, &r); err != nil {
		return r, fmt.Errorf("%w: query reply: %w", protocol.ErrMalformed, err)
	}
	return r, nil
}

// EnsureRegistered registers the member (name, contributors) unless it already is. It asks for
// this member alone (a point query), so its cost does not grow with the community; a follower
// that has not applied the registration yet answers "not found", and the registration that
// follows is refused as existing, which the leader's copy then confirms.
func (c *Client) EnsureRegistered(ctx context.Context, name string, contributors []string) error {
	_, err := c.Query(ctx, protocol.Query{What: protocol.QueryMember, Member: c.ID()})
	if err == nil {
		return nil
	}
	if !errors.Is(err, consensus.ErrNotFound) {
		return err
	}
	_, err = c.Submit(ctx, &consensus.RegisterBody{PublicKey: c.cfg.Identity.PublicKey(), Name: name, Contributors: contributors})
	if errors.Is(err, consensus.ErrExists) {
		if _, qerr := c.Query(ctx, protocol.Query{What: protocol.QueryMember, Member: c.ID(), Linearizable: true}); qerr == nil {
			return nil
		}
	}
	return err
}

// All reads every page of a list query (proposals, members, rounds, the ledger's payouts) and
// returns them as one reply. Each page is a consistent read of one replica; pages read while the
// state changes may overlap or skip, as with any paged listing (ask with Linearizable for pages
// of the leader's state). It stops with ErrTooLarge rather than hold more than maxItems.
func (c *Client) All(ctx context.Context, q protocol.Query, maxItems int) (protocol.QueryReply, error) {
	var all protocol.QueryReply
	q.Offset = 0
	if q.Limit == 0 {
		q.Limit = protocol.DefaultPage
	}
	for {
		r, err := c.Query(ctx, q)
		if err != nil {
			return protocol.QueryReply{}, err
		}
		n := len(r.Proposals) + len(r.Members) + len(r.Rounds) + len(r.Balances)
		all.Proposals = append(all.Proposals, r.Proposals...)
		all.Members = append(all.Members, r.Members...)
		all.Rounds = append(all.Rounds, r.Rounds...)
		all.Balances = append(all.Balances, r.Balances...)
		if r.Ledger != nil {
			n = len(r.Ledger.Payouts)
			if all.Ledger == nil {
				all.Ledger = &consensus.Ledger{}
			}
			mergeLedger(all.Ledger, r.Ledger)
		}
		all.Total = r.Total
		got := int(q.Offset) + n
		if n == 0 || got >= int(r.Total) {
			return all, nil
		}
		if got > maxItems {
			return protocol.QueryReply{}, fmt.Errorf("%w: %s holds %d items, more than the %d asked for", protocol.ErrTooLarge, q.What, r.Total, maxItems)
		}
		q.Offset = uint32(got)
	}
}

// mergeLedger adds page p of the ledger to l: its payouts after l's, its balances and pools
// (each page holds those its payouts name) merged by key, the later page's value winning (a
// balance read later is newer), and the later treasury.
func mergeLedger(l, p *consensus.Ledger) {
	l.Payouts = append(l.Payouts, p.Payouts...)
	l.Treasury = p.Treasury
	bal := map[string]uint64{}
	for _, b := range l.Balances {
		bal[b.Contributor] = b.Amount
	}
	for _, b := range p.Balances {
		bal[b.Contributor] = b.Amount
	}
	l.Balances = l.Balances[:0]
	for _, k := range slices.Sorted(maps.Keys(bal)) {
		l.Balances = append(l.Balances, consensus.Balance{Contributor: k, Amount: bal[k]})
	}
	pools := map[uint64]consensus.Pool{}
	for _, pl := range l.Pools {
		pools[pl.Cohort] = pl
	}
	for _, pl := range p.Pools {
		pools[pl.Cohort] = pl
	}
	l.Pools = l.Pools[:0]
	for _, k := range slices.Sorted(maps.Keys(pools)) {
		l.Pools = append(l.Pools, pools[k])
	}
}

// Retryable reports errors worth another try, later or at another coordinator: no answer (a
// dial or connection failure), protocol.ErrUnavailable (no leader, a rate limit, not ready) and
// transport.ErrBusy. Rejections by the state (a forged signature, a vote after the deadline) are
// final.
func Retryable(err error) bool {
	var re *transport.RemoteError
	if !errors.As(err, &re) && wirecode.Of(err) == 0 {
		return true // no answer: a dial or connection failure, a timeout
	}
	// A coordinator serving all it may (transport.Config.MaxServing) did not read the request.
	return errors.Is(err, protocol.ErrUnavailable) || errors.Is(err, protocol.ErrNotReady) || errors.Is(err, transport.ErrBusy)
}

// callLimit bounds one call to one coordinator before the client tries the next.
const callLimit = 10 * time.Second

func (c *Client) roundTrip(ctx context.Context, req transport.Message, limit time.Duration) (transport.Message, error) {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()
	backoff := 50 * time.Millisecond
	var last error
	for {
		c.mu.Lock()
		addr := c.cfg.Addrs[c.next%len(c.cfg.Addrs)]
		c.mu.Unlock()
		reply, err := c.call(ctx, addr, req, limit)
		if err == nil {
			return reply, nil
		}
		if !Retryable(err) {
			var re *transport.RemoteError
			if errors.As(err, &re) {
				return transport.Message{}, re.Reason() // the coordinator's words, matching its sentinel
			}
			return transport.Message{}, err
		}
		last = err
		c.mu.Lock()
		if c.cfg.Addrs[c.next%len(c.cfg.Addrs)] == addr {
			c.next++
		}
		c.mu.Unlock()
		c.log.Debug("retrying", "type", req.Type, "addr", addr, "err", err)
		select {
		case <-ctx.Done():
			return transport.Message{}, fmt.Errorf("%s: no coordinator answered in %s: last error: %w", req.Type, c.cfg.Timeout, last)
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, time.Second)
	}
}

// CallAt sends one request to the coordinator at addr over the client's connection (the member's
// identity), bounded only by ctx: the data plane's uploads and long-polls.
func (c *Client) CallAt(ctx context.Context, addr string, req transport.Message) (transport.Message, error) {
	return c.call(ctx, addr, req, 0)
}

// FetchBlob fetches a blob (transport manifest root) from the coordinator at addr in hashed
// chunks striped over stripes fresh connections of the client's endpoint (0: transport's default),
// so that one lossy connection's congestion control does not cap the transfer.
func (c *Client) FetchBlob(ctx context.Context, addr string, root transport.Hash, maxSize int64, stripes int) ([]byte, error) {
	conns, err := c.ep.DialStripes(ctx, addr, stripes)
	if err != nil {
		return nil, err
	}
	if want, ok := c.pinOf(addr); ok && conns[0].Peer() != want {
		for _, conn := range conns {
			conn.Close()
		}
		return nil, fmt.Errorf("%w: %s is %s, pinned to %s", transport.ErrUnexpectedPeer, addr, conns[0].Peer(), want)
	}
	defer func() {
		for _, conn := range conns {
			c.stripeMu.Lock()
			c.stripes = c.stripes.Plus(conn.Stats())
			c.stripeMu.Unlock()
			conn.Close()
		}
	}()
	return transport.Fetch(ctx, conns, root, transport.TransferOptions{MaxSize: maxSize})
}

// WireStats sums the QUIC counters of the client's connections, open and closed.
func (c *Client) WireStats() transport.Stats {
	c.stripeMu.Lock()
	defer c.stripeMu.Unlock()
	return c.stripes.Plus(c.pool.Stats())
}

func (c *Client) callAddr(ctx context.Context, addr string, req transport.Message) (transport.Message, error) {
	return c.call(ctx, addr, req, callLimit)
}

func (c *Client) call(ctx context.Context, addr string, req transport.Message, limit time.Duration) (transport.Message, error) {
	if limit > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, limit)
		defer cancel()
	}
	want, _ := c.pinOf(addr)
	return c.pool.Call(ctx, addr, want, req)
}
