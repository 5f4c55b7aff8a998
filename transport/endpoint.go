package transport

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"math"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/cohortlab/cohort/internal/wirecode"
)

// Defaults for the zero fields of Config.
const (
	DefaultHandshakeTimeout    = 10 * time.Second
	DefaultIdleTimeout         = 60 * time.Second
	DefaultKeepAlive           = 15 * time.Second
	DefaultInitialStreamWindow = 1 << 20  // 1 MiB
	DefaultMaxStreamWindow     = 16 << 20 // 16 MiB
	DefaultInitialConnWindow   = 2 << 20  // 2 MiB
	DefaultMaxConnWindow       = 32 << 20 // 32 MiB
	// DefaultMaxWindowPerKey is a key's MaxConnsPerKey connections at their initial window,
	// and 16 MiB for auto-tuning to share: a member's call connection and DefaultStripes
	// transfer connections may grow to 48 MiB together, which keeps 4 Gbit/s in flight
	// over a 100 ms round trip (a 100 Mbit/s link at 100 ms needs 1.25 MB).
	DefaultMaxWindowPerKey = DefaultMaxConnsPerKey*DefaultInitialConnWindow + 16<<20 // 48 MiB
	// DefaultMaxIncomingStreams is also how many requests one connection has served at once
	// (MaxConcurrentRequests): every stream a peer may open is being read, so none holds
	// data waiting, unread, in the flow-control windows.
	DefaultMaxIncomingStreams = 32
	DefaultMaxPayload         = 64 << 20 // 64 MiB
	// DefaultMaxConnsPerKey leaves a member its DefaultStripes transfer connections and its
	// call connection, twice over for a restart whose old connections are still timing out.
	DefaultMaxConnsPerKey = 16
	// DefaultMaxConnsPerSource leaves room behind one NAT address for about 28 members
	// fetching a model at once (9 connections each), and more between fetches.
	DefaultMaxConnsPerSource = 256
	DefaultRequestTimeout    = 10 * time.Second
	DefaultMinRate           = 16 << 10 // 16 KiB/s
	// DefaultMaxServing bounds the requests an endpoint serves at once over all its
	// connections: a few per member (a next-round and an aggregate long-poll, an upload) for
	// several hundred members.
	DefaultMaxServing = 4096
	// DefaultMaxServingPerSource is a quarter of it: taking them all needs four sources, and
	// one source holds two keys' worth (MaxConnsPerKey × MaxIncomingStreams each).
	DefaultMaxServingPerSource = 1024
)

// ErrConfig is wrapped by every Config.Validate error.
var ErrConfig = errors.New("transport: invalid config")

// Config configures an Endpoint. The zero value of every field except Identity means the
// documented default.
type Config struct {
	// Identity is this node's key and certificate. Required.
	Identity *Identity
	// Allow decides whether a peer that proved its key may connect (server side) or be
	// connected to (client side). A non-nil error refuses the handshake. Nil allows any
	// node with a valid self-signed ed25519 certificate.
	Allow func(NodeID) error
	// HandshakeTimeout bounds the handshake. Zero means DefaultHandshakeTimeout (10 s).
	HandshakeTimeout time.Duration
	// IdleTimeout closes a connection after this long without any packet from the peer.
	// Zero means DefaultIdleTimeout (60 s).
	IdleTimeout time.Duration
	// KeepAlive is the period of keep-alive packets. Zero means DefaultKeepAlive (15 s,
	// capped by quic-go at half the idle timeout); negative disables keep-alives.
	KeepAlive time.Duration
	// FixedPacketSize turns path-MTU discovery off: every packet this endpoint sends is at most
	// 1,280 bytes of UDP payload, which every IPv6 path and nearly every IPv4 one carries. With
	// it off (the zero value) quic-go probes each connection's path with a few packets of up to
	// 1,452 bytes (about 5.6 KB a connection on loopback, four probes) and then sends packets
	// that large. The probes are paid once a connection; what they buy is ~13 % fewer packets for
	// what the endpoint sends afterwards. An endpoint that sends large transfers (a coordinator:
	// aggregates, models) gains; one that sends small requests and modest uploads over a few
	// long-lived connections (a member) loses more to the probes than the larger packets save.
	FixedPacketSize bool
	// InitialStreamWindow and MaxStreamWindow bound the per-stream receive window
	// (auto-tuned in between). Zero means 1 MiB and 16 MiB.
	InitialStreamWindow, MaxStreamWindow uint64
	// InitialConnWindow and MaxConnWindow bound the per-connection receive window.
	// Zero means 2 MiB and 32 MiB.
	InitialConnWindow, MaxConnWindow uint64
	// MaxWindowPerKey caps the connection receive windows of one peer key's connections to
	// this endpoint together: auto-tuning grows a connection's window past InitialConnWindow
	// only while the sum over the key's connections stays within it (each connection gets
	// InitialConnWindow regardless). The windows bound what a peer has sent and the endpoint
	// holds unconsumed — on streams not read yet, or refused and not yet reset by the peer —
	// so this bounds the memory one key can make the endpoint hold however slowly it reads:
	// MaxWindowPerKey, or MaxConnsPerKey × InitialConnWindow if that is more. Zero means
	// DefaultMaxWindowPerKey (48 MiB).
	MaxWindowPerKey uint64
	// MaxIncomingStreams is the number of concurrent streams a peer may open on one
	// connection. Zero means DefaultMaxIncomingStreams (32).
	MaxIncomingStreams int64
	// MaxPayload caps the payload of a message read by Call and Serve (a Router may cap a
	// request type lower). Zero means DefaultMaxPayload (64 MiB).
	MaxPayload int64
	// MaxConcurrentRequests bounds the requests Serve handles at once on one connection
	// (reading, handling and answering). Zero means MaxIncomingStreams, the most a peer can
	// have open: every open stream is read as its bytes arrive. Set lower, the peer's further
	// streams wait unaccepted, and what it sends on them sits in the connection's
	// flow-control window (up to MaxConnWindow) until their turn.
	MaxConcurrentRequests int
	// MaxConnsPerKey caps the connections one peer key holds to this endpoint at once: the
	// next is closed as it is accepted, with a reason naming the limit. Zero means
	// DefaultMaxConnsPerKey (16); negative means no limit.
	MaxConnsPerKey int
	// MaxConnsPerSource does the same per source address: an IPv4 address, or the /64 of an
	// IPv6 address (one host's allocation). Zero means DefaultMaxConnsPerSource (256);
	// negative means no limit (a simulation running every peer on 127.0.0.1).
	MaxConnsPerSource int
	// RequestTimeout bounds how long a served request's header may take to arrive once
	// Serve takes up its stream; its payload gets RequestTimeout plus its length at MinRate,
	// and so does the reply. A request that stalls is answered with ErrTooSlow and no
	// longer read. Zero means DefaultRequestTimeout (10 s).
	RequestTimeout time.Duration
	// MinRate, in bytes per second, is the slowest a served request's payload or its reply
	// may move (see RequestTimeout). Zero means DefaultMinRate (16 KiB/s).
	MinRate int64
	// MaxServing bounds the requests the endpoint serves at once over all its connections,
	// whatever their keys and sources: a request beyond it is answered at once with ErrBusy,
	// its payload unread. Zero means DefaultMaxServing (4096).
	MaxServing int
	// MaxServingPerSource does the same for the connections of one source (SourceOf), so
	// that one address cannot take them all. Zero means DefaultMaxServingPerSource (1024);
	// negative means no limit but MaxServing.
	MaxServingPerSource int
	// Refused, if set, is told of every connection and request this endpoint refuses on a
	// limit, as malformed, or from its header, with the reason sent to the peer: it wraps
	// ErrConnLimit, ErrBusy, ErrTooSlow, ErrUnknownType, ErrPayloadTooLarge, one of the frame
	// errors (ErrBadMagic, ErrHeaderTooLarge, ErrMalformedHeader, ErrChecksum,
	// ErrTrailingData), or is a Router's own refusal. For metrics and logs; it must not
	// block.
	Refused func(peer NodeID, err error)
}

// Validate reports the first invalid field.
func (c *Config) Validate() error {
	switch {
	case c.Identity == nil:
		return fmt.Errorf("%w: Identity is required", ErrConfig)
	case c.HandshakeTimeout < 0:
		return fmt.Errorf("%w: HandshakeTimeout %v is negative", ErrConfig, c.HandshakeTimeout)
	case c.IdleTimeout < 0:
		return fmt.Errorf("%w: IdleTimeout %v is negative", ErrConfig, c.IdleTimeout)
	case c.MaxIncomingStreams < 0:
		return fmt.Errorf("%w: MaxIncomingStreams %d is negative", ErrConfig, c.MaxIncomingStreams)
	case c.MaxPayload < 0:
		return fmt.Errorf("%w: MaxPayload %d is negative", ErrConfig, c.MaxPayload)
	case c.MaxConcurrentRequests < 0:
		return fmt.Errorf("%w: MaxConcurrentRequests %d is negative", ErrConfig, c.MaxConcurrentRequests)
	case c.RequestTimeout < 0:
		return fmt.Errorf("%w: RequestTimeout %v is negative", ErrConfig, c.RequestTimeout)
	case c.MinRate < 0:
		return fmt.Errorf("%w: MinRate %d is negative", ErrConfig, c.MinRate)
	case c.MaxServing < 0:
		return fmt.Errorf("%w: MaxServing %d is negative", ErrConfig, c.MaxServing)
	case c.MaxServingPerSource > 0 && c.MaxServing > 0 && c.MaxServingPerSource > c.MaxServing:
		return fmt.Errorf("%w: MaxServingPerSource %d exceeds MaxServing %d", ErrConfig, c.MaxServingPerSource, c.MaxServing)
	}
	d := c.withDefaults()
	if d.InitialStreamWindow > d.MaxStreamWindow {
		return fmt.Errorf("%w: InitialStreamWindow %d exceeds MaxStreamWindow %d", ErrConfig, d.InitialStreamWindow, d.MaxStreamWindow)
	}
	if d.InitialConnWindow > d.MaxConnWindow {
		return fmt.Errorf("%w: InitialConnWindow %d exceeds MaxConnWindow %d", ErrConfig, d.InitialConnWindow, d.MaxConnWindow)
	}
	return nil
}

func (c Config) withDefaults() Config {
	if c.HandshakeTimeout == 0 {
		c.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if c.IdleTimeout == 0 {
		c.IdleTimeout = DefaultIdleTimeout
	}
	if c.KeepAlive == 0 {
		c.KeepAlive = DefaultKeepAlive
	}
	if c.InitialStreamWindow == 0 {
		c.InitialStreamWindow = DefaultInitialStreamWindow
	}
	if c.MaxStreamWindow == 0 {
		c.MaxStreamWindow = max(DefaultMaxStreamWindow, c.InitialStreamWindow)
	}
	if c.InitialConnWindow == 0 {
		c.InitialConnWindow = DefaultInitialConnWindow
	}
	if c.MaxConnWindow == 0 {
		c.MaxConnWindow = max(DefaultMaxConnWindow, c.InitialConnWindow)
	}
	if c.MaxWindowPerKey == 0 {
		c.MaxWindowPerKey = DefaultMaxWindowPerKey
	}
	if c.MaxIncomingStreams == 0 {
		c.MaxIncomingStreams = DefaultMaxIncomingStreams
	}
	if c.MaxPayload == 0 {
		c.MaxPayload = DefaultMaxPayload
	}
	if c.MaxConcurrentRequests == 0 || int64(c.MaxConcurrentRequests) > c.MaxIncomingStreams {
		c.MaxConcurrentRequests = int(c.MaxIncomingStreams)
	}
	if c.MaxConnsPerKey == 0 {
		c.MaxConnsPerKey = DefaultMaxConnsPerKey
	}
	if c.MaxConnsPerSource == 0 {
		c.MaxConnsPerSource = DefaultMaxConnsPerSource
	}
	if c.RequestTimeout == 0 {
		c.RequestTimeout = DefaultRequestTimeout
	}
	if c.MinRate == 0 {
		c.MinRate = DefaultMinRate
	}
	if c.MaxServing == 0 {
		c.MaxServing = DefaultMaxServing
	}
	if c.MaxServingPerSource == 0 {
		c.MaxServingPerSource = DefaultMaxServingPerSource
	}
	return c
}

// connLimits are the parts of the Config a Conn's Serve applies.
type connLimits struct {
	maxRequests    int
	requestTimeout time.Duration
	minRate        int64
	refused        func(NodeID, error)
	serving        *serving // shared by the endpoint's connections
}

func (c *Config) connLimits() connLimits {
	return connLimits{maxRequests: c.MaxConcurrentRequests, requestTimeout: c.RequestTimeout, minRate: c.MinRate, refused: c.Refused,
		serving: &serving{max: c.MaxServing, maxPerSource: c.MaxServingPerSource, bySource: map[string]int{}}}
}

// serving counts the requests an endpoint serves, in all and per source.
type serving struct {
	max, maxPerSource int
	mu                sync.Mutex
	total             int
	bySource          map[string]int
}

// start takes one of the endpoint's places and one of src's, or says which it lacks.
func (s *serving) start(src string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.total >= s.max {
		return fmt.Errorf("%w: %d requests in progress, limit %d (MaxServing)", ErrBusy, s.total, s.max)
	}
	if n := s.bySource[src]; s.maxPerSource > 0 && n >= s.maxPerSource {
		return fmt.Errorf("%w: %d requests in progress from %s, limit %d (MaxServingPerSource)", ErrBusy, n, src, s.maxPerSource)
	}
	s.total++
	s.bySource[src]++
	return nil
}

// done gives back what start took.
func (s *serving) done(src string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.total--
	if s.bySource[src]--; s.bySource[src] <= 0 {
		delete(s.bySource, src)
	}
}

// refuse tells the Refused hook, if any, of err.
func (l connLimits) refuse(peer NodeID, err error) {
	if l.refused != nil {
		l.refused(peer, err)
	}
}

// transferTime is how long n bytes of a request or reply may take: RequestTimeout plus n at
// MinRate.
func (l connLimits) transferTime(n uint64) time.Duration {
	secs := n / uint64(l.minRate)
	if secs > uint64(math.MaxInt64/int64(time.Second))/2 {
		secs = uint64(math.MaxInt64/int64(time.Second)) / 2
	}
	return l.requestTimeout + time.Duration(secs)*time.Second
}

func (c *Config) quicConfig() *quic.Config {
	ka := c.KeepAlive
	if ka < 0 {
		ka = 0
	}
	return &quic.Config{
		HandshakeIdleTimeout:           c.HandshakeTimeout,
		MaxIdleTimeout:                 c.IdleTimeout,
		KeepAlivePeriod:                ka,
		InitialStreamReceiveWindow:     c.InitialStreamWindow,
		MaxStreamReceiveWindow:         c.MaxStreamWindow,
		InitialConnectionReceiveWindow: c.InitialConnWindow,
		MaxConnectionReceiveWindow:     c.MaxConnWindow,
		MaxIncomingStreams:             c.MaxIncomingStreams,
		MaxIncomingUniStreams:          -1,
		DisablePathMTUDiscovery:        c.FixedPacketSize,
	}
}

// ErrUnexpectedPeer is returned by DialNode when the peer's key is not the expected one.
var ErrUnexpectedPeer = errors.New("transport: unexpected peer")

// Endpoint is one UDP socket (or any net.PacketConn, e.g. a linkshape.Conn) that dials
// QUIC connections and, after Listen, accepts them. Many connections share the socket,
// so stripes dialled from one Endpoint share its (shaped) link.
type Endpoint struct {
	cfg      Config
	tr       *quic.Transport
	pc       net.PacketConn
	ownsPC   bool
	qcfg     *quic.Config
	mu       sync.Mutex
	ln       *quic.Listener
	closeErr error
	closed   bool
	byKey    map[NodeID]int // accepted connections open, per peer key
	bySource map[string]int // and per source (sourceOf)
	limits   connLimits     // shared by the endpoint's connections
	windows  *windowBudget  // receive windows per peer key (MaxWindowPerKey)
}

// NewEndpoint makes a dial-only endpoint on pc; call Listen to accept connections too.
// The endpoint takes over pc: do not read from or write to it afterwards. Close does not
// close pc (the caller owns it).
func NewEndpoint(pc net.PacketConn, cfg Config) (*Endpoint, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	c := cfg.withDefaults()
	e := &Endpoint{cfg: c, pc: pc, tr: &quic.Transport{Conn: pc}, qcfg: c.quicConfig(),
		byKey: map[NodeID]int{}, bySource: map[string]int{}, limits: c.connLimits(),
		windows: newWindowBudget(c.InitialConnWindow, c.MaxWindowPerKey)}
	e.qcfg.AllowConnectionWindowIncrease = e.windows.allow
	return e, nil
}

// Listen makes an endpoint on pc that accepts connections (and can dial).
func Listen(pc net.PacketConn, cfg Config) (*Endpoint, error) {
	e, err := NewEndpoint(pc, cfg)
	if err != nil {
		return nil, err
	}
	if err := e.Listen(); err != nil {
		return nil, err
	}
	return e, nil
}

// ListenAddr binds a UDP socket at addr (e.g. "127.0.0.1:0") and listens on it.
// Close closes the socket.
func ListenAddr(addr string, cfg Config) (*Endpoint, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	pc, err := listenUDP(addr)
	if err != nil {
		return nil, err
	}
	e, err := Listen(pc, cfg)
	if err != nil {
		pc.Close()
		return nil, err
	}
	e.ownsPC = true
	return e, nil
}

func listenUDP(addr string) (*net.UDPConn, error) {
	ua, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return nil, fmt.Errorf("transport: resolve %q: %w", addr, err)
	}
	pc, err := net.ListenUDP("udp", ua)
	if err != nil {
		return nil, fmt.Errorf("transport: listen %q: %w", addr, err)
	}
	return pc, nil
}

// Listen starts accepting connections. It may be called once.
func (e *Endpoint) Listen() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.ln != nil {
		return errors.New("transport: endpoint already listening")
	}
	ln, err := e.tr.Listen(serverTLS(&e.cfg), e.qcfg)
	if err != nil {
		return fmt.Errorf("transport: listen: %w", err)
	}
	e.ln = ln
	return nil
}

// Addr is the local address of the socket.
func (e *Endpoint) Addr() net.Addr { return e.pc.LocalAddr() }

// Config returns the endpoint's configuration with defaults filled in.
func (e *Endpoint) Config() Config { return e.cfg }

// CodeConnLimit is the application error code of a connection closed at accept because its
// key or source already holds the most connections allowed (Config.MaxConnsPerKey,
// MaxConnsPerSource); the close reason says which.
const CodeConnLimit = 0x20

// ErrConnLimit is wrapped by the reason a connection over MaxConnsPerKey or MaxConnsPerSource
// is closed with.
var ErrConnLimit error = wirecode.New(6, "transport: connection limit")

// Accept waits for the next connection that completed the handshake, passed Allow and fits
// the per-key and per-source connection limits; connections over a limit are closed with
// CodeConnLimit and a reason naming it, and Accept waits on.
func (e *Endpoint) Accept(ctx context.Context) (*Conn, error) {
	e.mu.Lock()
	ln := e.ln
	e.mu.Unlock()
	if ln == nil {
		return nil, errors.New("transport: Accept on an endpoint that is not listening")
	}
	for {
		qc, err := ln.Accept(ctx)
		if err != nil {
			return nil, fmt.Errorf("transport: accept: %w", err)
		}
		c, err := e.newConn(qc)
		if err != nil {
			continue // newConn closed it; the next one may be fine
		}
		if err := e.admit(c); err != nil {
			c.limits.refuse(c.peer, err)
			c.CloseWithError(CodeConnLimit, err.Error())
			continue
		}
		return c, nil
	}
}

// admit counts c against its key's and source's limits, or says which it exceeds. The
// counts go down when c closes.
func (e *Endpoint) admit(c *Conn) error {
	src := c.source
	e.mu.Lock()
	defer e.mu.Unlock()
	if n := e.byKey[c.peer]; e.cfg.MaxConnsPerKey > 0 && n >= e.cfg.MaxConnsPerKey {
		return fmt.Errorf("%w: too many connections from key %s: %d open, limit %d", ErrConnLimit, c.peer, n, e.cfg.MaxConnsPerKey)
	}
	if n := e.bySource[src]; e.cfg.MaxConnsPerSource > 0 && n >= e.cfg.MaxConnsPerSource {
		return fmt.Errorf("%w: too many connections from %s: %d open, limit %d", ErrConnLimit, src, n, e.cfg.MaxConnsPerSource)
	}
	e.byKey[c.peer]++
	e.bySource[src]++
	context.AfterFunc(c.Context(), func() {
		e.mu.Lock()
		defer e.mu.Unlock()
		if e.byKey[c.peer]--; e.byKey[c.peer] <= 0 {
			delete(e.byKey, c.peer)
		}
		if e.bySource[src]--; e.bySource[src] <= 0 {
			delete(e.bySource, src)
		}
	})
	return nil
}

// sourceOf names the source a connection is counted against: its IPv4 address, or the /64
// of its IPv6 address.
func sourceOf(a net.Addr) string {
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		return a.String()
	}
	ip := ap.Addr().Unmap()
	if ip.Is6() {
		p, _ := ip.Prefix(64)
		return p.String()
	}
	return ip.String()
}

// SourceOf is the source (an IPv4 address, or an IPv6 /64) that connection limits count addr
// against; applications that limit per source (rate limits) use the same grouping.
func SourceOf(addr net.Addr) string { return sourceOf(addr) }

// Dial connects to a listening endpoint at addr ("host:port").
func (e *Endpoint) Dial(ctx context.Context, addr string) (*Conn, error) {
	ua, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return nil, fmt.Errorf("transport: resolve %q: %w", addr, err)
	}
	return e.DialAddr(ctx, ua)
}

// DialAddr connects to a listening endpoint at addr.
func (e *Endpoint) DialAddr(ctx context.Context, addr net.Addr) (*Conn, error) {
	qc, err := e.tr.Dial(ctx, addr, clientTLS(&e.cfg), e.qcfg)
	if err != nil {
		return nil, fmt.Errorf("transport: dial %s: %w", addr, err)
	}
	return e.newConn(qc)
}

// DialNode connects to addr and checks that the peer is the node want.
func (e *Endpoint) DialNode(ctx context.Context, addr string, want NodeID) (*Conn, error) {
	c, err := e.Dial(ctx, addr)
	if err != nil {
		return nil, err
	}
	if c.Peer() != want {
		c.CloseWithError(1, "unexpected peer")
		return nil, fmt.Errorf("%w: %s is %s, want %s", ErrUnexpectedPeer, addr, c.Peer(), want)
	}
	return c, nil
}

// Close closes the listener and every connection of the endpoint, and the socket if the
// endpoint opened it (ListenAddr, Dial).
func (e *Endpoint) Close() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return e.closeErr
	}
	e.closed = true
	if e.ln != nil {
		e.ln.Close()
	}
	e.closeErr = e.tr.Close()
	if e.ownsPC {
		if err := e.pc.Close(); err != nil && e.closeErr == nil {
			e.closeErr = err
		}
	}
	return e.closeErr
}

// Dial opens a fresh UDP socket, connects to addr and returns the connection. The socket
// is closed when the connection closes (by either side).
func Dial(ctx context.Context, addr string, cfg Config) (*Conn, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	pc, err := listenUDP(":0")
	if err != nil {
		return nil, err
	}
	e, err := NewEndpoint(pc, cfg)
	if err != nil {
		pc.Close()
		return nil, err
	}
	e.ownsPC = true
	c, err := e.Dial(ctx, addr)
	if err != nil {
		e.Close()
		return nil, err
	}
	go func() {
		<-c.qc.Context().Done()
		e.Close()
	}()
	return c, nil
}

// Conn is an authenticated QUIC connection to a peer whose key was verified.
type Conn struct {
	qc         *quic.Conn
	peer       NodeID
	peerKey    ed25519.PublicKey
	maxPayload int64
	limits     connLimits
	source     string // sourceOf(RemoteAddr())
	streamed   *streamed
}

// streamed counts the bytes a connection's streams carried: the messages themselves, frame
// headers and payloads, without QUIC's packet headers, acknowledgements and retransmissions.
type streamed struct{ sent, received atomic.Uint64 }

func (e *Endpoint) newConn(qc *quic.Conn) (*Conn, error) {
	st := qc.ConnectionState().TLS
	if len(st.PeerCertificates) != 1 {
		qc.CloseWithError(1, "no peer certificate")
		return nil, ErrNoPeerCert
	}
	pub, ok := st.PeerCertificates[0].PublicKey.(ed25519.PublicKey)
	if !ok {
		qc.CloseWithError(1, "bad peer certificate")
		return nil, ErrPeerCert
	}
	if st.NegotiatedProtocol != ALPN {
		qc.CloseWithError(1, "bad ALPN")
		return nil, fmt.Errorf("transport: peer negotiated ALPN %q, want %q", st.NegotiatedProtocol, ALPN)
	}
	c := &Conn{streamed: &streamed{}, qc: qc, peer: NodeIDFromPublicKey(pub), peerKey: pub, maxPayload: e.cfg.MaxPayload, limits: e.limits,
		source: sourceOf(qc.RemoteAddr())}
	e.windows.add(qc, c.peer)
	context.AfterFunc(qc.Context(), func() { e.windows.remove(qc) })
	return c, nil
}

// Peer is the NodeID of the remote node.
func (c *Conn) Peer() NodeID { return c.peer }

// PeerKey is the remote node's public key (to verify its signatures).
func (c *Conn) PeerKey() ed25519.PublicKey { return c.peerKey }

// RemoteAddr is the peer's address.
func (c *Conn) RemoteAddr() net.Addr { return c.qc.RemoteAddr() }

// LocalAddr is the local address.
func (c *Conn) LocalAddr() net.Addr { return c.qc.LocalAddr() }

// Context is done when the connection is closed.
func (c *Conn) Context() context.Context { return c.qc.Context() }

// Close closes the connection with application error code 0.
func (c *Conn) Close() error { return c.qc.CloseWithError(0, "") }

// CloseWithError closes the connection, sending code and reason to the peer.
func (c *Conn) CloseWithError(code uint64, reason string) error {
	return c.qc.CloseWithError(quic.ApplicationErrorCode(code), reason)
}

// OpenStream opens a bidirectional stream, waiting while the peer's stream limit is reached.
func (c *Conn) OpenStream(ctx context.Context) (*Stream, error) {
	s, err := c.qc.OpenStreamSync(ctx)
	if err != nil {
		return nil, fmt.Errorf("transport: open stream to %s: %w", c.peer, err)
	}
	return &Stream{s: s, n: c.streamed}, nil
}

// AcceptStream waits for the peer to open a stream.
func (c *Conn) AcceptStream(ctx context.Context) (*Stream, error) {
	s, err := c.qc.AcceptStream(ctx)
	if err != nil {
		return nil, fmt.Errorf("transport: accept stream from %s: %w", c.peer, err)
	}
	return &Stream{s: s, n: c.streamed}, nil
}

// Stats are counters of one connection, from quic-go.
type Stats struct {
	SmoothedRTT      time.Duration
	CongestionWindow uint64 // bytes
	BytesSent        uint64 // QUIC bytes incl. retransmissions, excl. UDP/IP headers
	BytesReceived    uint64
	PacketsSent      uint64
	PacketsLost      uint64
	BytesLost        uint64
	// StreamBytesSent and StreamBytesReceived count what the streams carried: the messages
	// (frame headers and payloads), without QUIC's own packet overhead.
	StreamBytesSent, StreamBytesReceived uint64
}

// Stats returns the connection's counters.
func (c *Conn) Stats() Stats {
	s := c.qc.ConnectionStats()
	return Stats{
		SmoothedRTT:      s.SmoothedRTT,
		CongestionWindow: s.CongestionWindow,
		BytesSent:        s.BytesSent,
		BytesReceived:    s.BytesReceived,
		PacketsSent:      s.PacketsSent,
		PacketsLost:      s.PacketsLost,
		BytesLost:        s.BytesLost,

		StreamBytesSent:     c.streamed.sent.Load(),
		StreamBytesReceived: c.streamed.received.Load(),
	}
}

// Stream is a bidirectional QUIC stream. Close ends the sending direction only; Abort
// drops both directions.
type Stream struct {
	s *quic.Stream
	n *streamed
}

// Read reads from the stream.
func (s *Stream) Read(p []byte) (int, error) {
	n, err := s.s.Read(p)
	s.n.received.Add(uint64(n))
	return n, err
}

// Write writes to the stream.
func (s *Stream) Write(p []byte) (int, error) {
	n, err := s.s.Write(p)
	s.n.sent.Add(uint64(n))
	return n, err
}

// Close ends the sending direction (the peer reads io.EOF after the data).
func (s *Stream) Close() error { return s.s.Close() }

// Abort resets both directions with the application error code.
func (s *Stream) Abort(code uint64) {
	s.s.CancelWrite(quic.StreamErrorCode(code))
	s.s.CancelRead(quic.StreamErrorCode(code))
}

// SetDeadline sets the read and write deadlines.
func (s *Stream) SetDeadline(t time.Time) error { return s.s.SetDeadline(t) }

// DefaultStripes is the number of connections DialStripes opens when asked for 0.
// Measured over a shaped 10 Mbit/s, 100 ms RTT, 1 % loss link (BenchmarkStripedGoodput):
// 1 connection reaches ~0.2 of the link, 4 reach 0.68–0.81, 8 reach 0.88–0.91, and 16
// or 32 no more (0.85–0.89) while their queue overflows cost 25–50 % extra wire bytes.
const DefaultStripes = 8

// DialStripes opens n connections (0 means DefaultStripes) to addr for striped
// transfers, and checks they all reach the same node. On error it closes the ones it
// opened.
func (e *Endpoint) DialStripes(ctx context.Context, addr string, n int) ([]*Conn, error) {
	if n <= 0 {
		n = DefaultStripes
	}
	conns := make([]*Conn, 0, n)
	fail := func(err error) ([]*Conn, error) {
		for _, c := range conns {
			c.Close()
		}
		return nil, err
	}
	for range n {
		c, err := e.Dial(ctx, addr)
		if err != nil {
			return fail(err)
		}
		conns = append(conns, c)
		if c.Peer() != conns[0].Peer() {
			return fail(fmt.Errorf("%w: stripes to %s reached %s and %s", ErrUnexpectedPeer, addr, conns[0].Peer(), c.Peer()))
		}
	}
	return conns, nil
}
