package transport

import (
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"
)

// StreamALPN is the application protocol of StreamListener connections (Raft between
// coordinators). It differs from ALPN, so a QUIC client key can never be mistaken for a stream
// peer, nor the other way round.
const StreamALPN = "cohort-raft/1"

// Defaults for the zero fields of StreamConfig.
const (
	DefaultStreamHandshakeTimeout = 5 * time.Second
	DefaultMaxPendingHandshakes   = 32
)

// StreamConfig configures a StreamListener: TCP connections carrying TLS 1.3 with mutual
// ed25519 authentication, for a protocol whose every party is known by key (Raft between
// coordinators). The zero value of every field except Identity and Allow means the default.
type StreamConfig struct {
	// Identity is this node's key and certificate. Required.
	Identity *Identity
	// Allow decides, during the handshake, whether a peer that proved its key may connect
	// (accepted connections) or be connected to (dialled ones). Required: a stream layer that
	// lets any key in is what this type exists to prevent. It is asked again by Recheck.
	Allow func(NodeID) error
	// HandshakeTimeout bounds an accepted connection's TLS handshake and a dial (connect plus
	// handshake). Zero means DefaultStreamHandshakeTimeout (5 s).
	HandshakeTimeout time.Duration
	// MaxPendingHandshakes bounds the accepted connections still handshaking; past it new TCP
	// connections are closed at once, so unauthenticated sockets cannot pile up. Zero means
	// DefaultMaxPendingHandshakes (32).
	MaxPendingHandshakes int
}

func (c StreamConfig) validate() error {
	switch {
	case c.Identity == nil:
		return fmt.Errorf("%w: StreamConfig.Identity is required", ErrConfig)
	case c.Allow == nil:
		return fmt.Errorf("%w: StreamConfig.Allow is required", ErrConfig)
	case c.HandshakeTimeout < 0:
		return fmt.Errorf("%w: StreamConfig.HandshakeTimeout %v is negative", ErrConfig, c.HandshakeTimeout)
	case c.MaxPendingHandshakes < 0:
		return fmt.Errorf("%w: StreamConfig.MaxPendingHandshakes %d is negative", ErrConfig, c.MaxPendingHandshakes)
	}
	return nil
}

// StreamListener is a net.Listener whose Accept returns only connections from peers that
// completed a mutually authenticated TLS 1.3 handshake (ALPN StreamALPN) and passed Allow, plus
// Dial for the other direction: the two halves of hashicorp/raft's StreamLayer. Handshakes run
// off the accept loop, bounded in number and time, so a peer that connects and stalls holds
// neither Accept nor unbounded memory. Every connection it made or accepted is tracked, and
// Recheck closes those whose peer Allow now refuses (a coordinator removed from the cluster).
type StreamListener struct {
	cfg   StreamConfig
	ln    net.Listener
	srv   *tls.Config
	cli   *tls.Config
	ready chan net.Conn
	slots chan struct{}
	done  chan struct{}
	ctx   context.Context // cancelled by Close: ends handshakes in progress
	stop  context.CancelFunc

	mu     sync.Mutex
	conns  map[*StreamConn]struct{}
	closed bool
	wg     sync.WaitGroup
}

// ListenStream listens on the TCP address addr (e.g. "127.0.0.1:7001").
func ListenStream(addr string, cfg StreamConfig) (*StreamListener, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("transport: listen tcp %q: %w", addr, err)
	}
	return NewStreamListener(ln, cfg)
}

// NewStreamListener serves the authenticated stream protocol on ln, which it takes over (Close
// closes it).
func NewStreamListener(ln net.Listener, cfg StreamConfig) (*StreamListener, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if cfg.HandshakeTimeout == 0 {
		cfg.HandshakeTimeout = DefaultStreamHandshakeTimeout
	}
	if cfg.MaxPendingHandshakes == 0 {
		cfg.MaxPendingHandshakes = DefaultMaxPendingHandshakes
	}
	tc := Config{Identity: cfg.Identity, Allow: cfg.Allow}
	srv, cli := serverTLS(&tc), clientTLS(&tc)
	srv.NextProtos, cli.NextProtos = []string{StreamALPN}, []string{StreamALPN}
	l := &StreamListener{cfg: cfg, ln: ln, srv: srv, cli: cli, ready: make(chan net.Conn),
		slots: make(chan struct{}, cfg.MaxPendingHandshakes), done: make(chan struct{}),
		conns: map[*StreamConn]struct{}{}}
	l.ctx, l.stop = context.WithCancel(context.Background())
	l.wg.Add(1)
	go l.acceptLoop()
	return l, nil
}

func (l *StreamListener) acceptLoop() {
	defer l.wg.Done()
	for {
		raw, err := l.ln.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return // closed
		}
		select {
		case l.slots <- struct{}{}:
		default:
			raw.Close() // too many handshakes in progress: refuse rather than queue
			continue
		}
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			c, err := l.handshake(raw)
			<-l.slots
			if err != nil {
				raw.Close()
				return
			}
			select {
			case l.ready <- c:
			case <-l.done:
				c.Close()
			}
		}()
	}
}

func (l *StreamListener) handshake(raw net.Conn) (*StreamConn, error) {
	ctx, cancel := context.WithTimeout(l.ctx, l.cfg.HandshakeTimeout)
	defer cancel()
	tc := tls.Server(raw, l.srv) // HandshakeContext interrupts the handshake when ctx ends
	if err := tc.HandshakeContext(ctx); err != nil {
		return nil, err
	}
	return l.track(tc)
}

// track checks the negotiated protocol, wraps the connection and records it.
func (l *StreamListener) track(tc *tls.Conn) (*StreamConn, error) {
	st := tc.ConnectionState()
	if st.NegotiatedProtocol != StreamALPN {
		return nil, fmt.Errorf("transport: stream peer negotiated ALPN %q, want %q", st.NegotiatedProtocol, StreamALPN)
	}
	if len(st.PeerCertificates) != 1 {
		return nil, ErrNoPeerCert
	}
	pub, ok := st.PeerCertificates[0].PublicKey.(ed25519.PublicKey)
	if !ok {
		return nil, ErrPeerCert
	}
	c := &StreamConn{Conn: tc, peer: NodeIDFromPublicKey(pub), l: l}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil, net.ErrClosed
	}
	l.conns[c] = struct{}{}
	return c, nil
}

// Accept returns the next authenticated connection (a *StreamConn).
func (l *StreamListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ready:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

// Addr is the listening address.
func (l *StreamListener) Addr() net.Addr { return l.ln.Addr() }

// Dial connects to addr and completes the handshake within timeout (zero means the
// configured HandshakeTimeout); the server's key must pass Allow.
func (l *StreamListener) Dial(addr string, timeout time.Duration) (net.Conn, error) {
	if timeout <= 0 {
		timeout = l.cfg.HandshakeTimeout
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	d := tls.Dialer{NetDialer: &net.Dialer{}, Config: l.cli}
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("transport: stream dial %s: %w", addr, err)
	}
	c, err := l.track(nc.(*tls.Conn))
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("transport: stream dial %s: %w", addr, err)
	}
	return c, nil
}

// Recheck asks Allow again about every open connection's peer and closes those it refuses.
// It returns how many it closed.
func (l *StreamListener) Recheck() int {
	l.mu.Lock()
	var drop []*StreamConn
	for c := range l.conns {
		if l.cfg.Allow(c.peer) != nil {
			drop = append(drop, c)
		}
	}
	l.mu.Unlock()
	for _, c := range drop {
		c.Close()
	}
	return len(drop)
}

// Close stops accepting and closes every tracked connection.
func (l *StreamListener) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	close(l.done)
	l.stop()
	conns := make([]*StreamConn, 0, len(l.conns))
	for c := range l.conns {
		conns = append(conns, c)
	}
	l.mu.Unlock()
	err := l.ln.Close()
	for _, c := range conns {
		c.Close()
	}
	l.wg.Wait()
	return err
}

// StreamConn is an authenticated stream connection.
type StreamConn struct {
	*tls.Conn
	peer NodeID
	l    *StreamListener
	once sync.Once
}

// Peer is the NodeID of the remote node.
func (c *StreamConn) Peer() NodeID { return c.peer }

// Close closes the connection and forgets it.
func (c *StreamConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() {
		c.l.mu.Lock()
		delete(c.l.conns, c)
		c.l.mu.Unlock()
	})
	return err
}
