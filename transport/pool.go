package transport

import (
	"context"
	"errors"
	"sync"
	"time"
)

// PoolDialTimeout bounds one dial of a Pool: a node that does not answer costs a call this long,
// whatever the call's own deadline.
const PoolDialTimeout = 3 * time.Second

// Pool keeps one connection per address of an endpoint for request-response calls: dialled on
// first use, pinned to the key the caller names (any key when it names none), and dropped — so
// that the next call redials — when it broke or the node at the address must now have another
// key. A remote error (the node answered) keeps the connection. Safe for concurrent use; calls
// run concurrently.
type Pool struct {
	ep *Endpoint

	mu    sync.Mutex
	conns map[string]*Conn
	gone  Stats // counters of the connections dropped
}

// NewPool returns an empty pool of ep's connections.
func NewPool(ep *Endpoint) *Pool { return &Pool{ep: ep, conns: map[string]*Conn{}} }

// Call sends req to the node at addr over the pooled connection and waits for the reply. A
// non-zero want is the key that node must present (a connection to another key is closed and
// redialled).
func (p *Pool) Call(ctx context.Context, addr string, want NodeID, req Message) (Message, error) {
	c, err := p.conn(ctx, addr, want)
	if err != nil {
		return Message{}, err
	}
	reply, err := Call(ctx, c, req)
	var re *RemoteError
	if err != nil && !errors.As(err, &re) {
		p.drop(addr, c) // a broken connection: the next call redials
	}
	return reply, err
}

func (p *Pool) conn(ctx context.Context, addr string, want NodeID) (*Conn, error) {
	p.mu.Lock()
	c := p.conns[addr]
	p.mu.Unlock()
	if c != nil && c.Context().Err() == nil && (want == (NodeID{}) || c.Peer() == want) {
		return c, nil
	}
	if c != nil {
		p.drop(addr, c)
	}
	dctx, cancel := context.WithTimeout(ctx, PoolDialTimeout)
	defer cancel()
	var nc *Conn
	var err error
	if want != (NodeID{}) {
		nc, err = p.ep.DialNode(dctx, addr, want)
	} else {
		nc, err = p.ep.Dial(dctx, addr)
	}
	if err != nil {
		return nil, err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if old := p.conns[addr]; old != nil && old.Context().Err() == nil && (want == (NodeID{}) || old.Peer() == want) {
		nc.Close() // another call dialled first
		return old, nil
	}
	p.conns[addr] = nc
	return nc, nil
}

func (p *Pool) drop(addr string, c *Conn) {
	p.mu.Lock()
	if p.conns[addr] == c {
		delete(p.conns, addr)
		addStats(&p.gone, c.Stats())
	}
	p.mu.Unlock()
	c.Close()
}

// Stats sums the QUIC counters of every connection the pool has held.
func (p *Pool) Stats() Stats {
	p.mu.Lock()
	defer p.mu.Unlock()
	t := p.gone
	for _, c := range p.conns {
		addStats(&t, c.Stats())
	}
	return t
}

// Close closes the pool's connections.
func (p *Pool) Close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for addr, c := range p.conns {
		addStats(&p.gone, c.Stats())
		c.Close()
		delete(p.conns, addr)
	}
}

func addStats(t *Stats, x Stats) { *t = t.Plus(x) }

// Plus adds x's counters (bytes and packets) to s's; the RTT and congestion window, which do not
// add up, are s's.
func (s Stats) Plus(x Stats) Stats {
	s.BytesSent += x.BytesSent
	s.BytesReceived += x.BytesReceived
	s.PacketsSent += x.PacketsSent
	s.PacketsLost += x.PacketsLost
	s.BytesLost += x.BytesLost
	s.StreamBytesSent += x.StreamBytesSent
	s.StreamBytesReceived += x.StreamBytesReceived
	return s
}
