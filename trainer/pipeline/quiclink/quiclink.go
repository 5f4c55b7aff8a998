// Package quiclink links the stages of a pipeline group over the transport's QUIC connections:
// a pipeline.Link between processes.
//
// Each pair of stages that exchanges frames — consecutive stages, and the first with the last
// (the tie and the norm's total) — shares one mutually authenticated QUIC connection, dialled by
// the lower stage to the higher one's key and address. Each side sends on one stream of its own,
// opened with a hello naming its stage, and writes every frame on it as one transport message
// (type "pipeline.frame", the frame's wire form as payload), so frames arrive in order. A reader
// per peer reads its stream and queues what it decodes; a message larger than MaxFrame (the bound
// the model's shape gives, pipeline.Codecs.MaxFrame), one that is not a frame, a stream that
// ends, or a stage that connects as another is an error that Recv returns (wrapping
// pipeline.ErrFrame for what a peer sent), never a panic. At most MaxPending frames from a peer
// wait unread; beyond them the reader stops reading and QUIC's flow control holds the peer back.
//
// Connect dials a neighbour again and again until it is up (a group's processes start in any
// order), but fails at once on one that proves another key than the one listed. Shutdown ends a
// link gracefully: its streams end, and it waits for the peers' to end before closing the
// connections, so no frame in flight is dropped.
package quiclink

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/cohortlab/cohort/trainer/pipeline"
	"github.com/cohortlab/cohort/transport"
)

// Message types on a stage's stream.
const (
	helloType = "pipeline.hello"
	frameType = "pipeline.frame"
)

// DefaultMaxPending is the number of frames from one peer that may wait unread when
// Config.MaxPending is zero.
const DefaultMaxPending = 64

// ErrConfig reports an invalid Config.
var ErrConfig = errors.New("quiclink: invalid config")

// Peer is one stage of the group: its key and the address its endpoint listens on.
type Peer struct {
	ID   transport.NodeID
	Addr string
}

// Config configures one stage's link.
type Config struct {
	// Self is this stage's index in Peers.
	Self int
	// Endpoint is this stage's listening endpoint (its Identity is Peers[Self].ID). Its Allow
	// should admit only the group's keys; the link checks them too.
	Endpoint *transport.Endpoint
	// Peers lists every stage of the group, in stage order.
	Peers []Peer
	// MaxFrame bounds a frame's wire size from a peer: pipeline.Codecs.MaxFrame. Required.
	MaxFrame int
	// MaxPending bounds the frames from one peer waiting unread. Zero means DefaultMaxPending.
	MaxPending int
}

// Neighbours are the stages that self exchanges frames with in a group of stages: self − 1,
// self + 1, and the first with the last.
func Neighbours(self, stages int) []int {
	var out []int
	add := func(s int) {
		if s < 0 || s >= stages || s == self {
			return
		}
		for _, o := range out {
			if o == s {
				return
			}
		}
		out = append(out, s)
	}
	add(self - 1)
	add(self + 1)
	if self == 0 {
		add(stages - 1)
	}
	if self == stages-1 {
		add(0)
	}
	return out
}

// Link is a pipeline.Link over QUIC.
type Link struct {
	self  int
	peers map[int]*peerConn
	wg    sync.WaitGroup
	stop  context.CancelFunc
}

var _ pipeline.Link = (*Link)(nil)

type peerConn struct {
	stage int
	conn  *transport.Conn
	mu    sync.Mutex // serialises writes to out
	out   *transport.Stream
	in    chan pipeline.Frame
	done  chan struct{} // closed when the reader ends; err says why
	err   error
}

type hello struct {
	Stage int `msgpack:"stage"`
}

// Connect links stage cfg.Self to its neighbours: it dials the higher ones (again and again
// until they are up) and accepts the lower ones, and returns once every connection has
// exchanged hellos (or ctx ends).
func Connect(ctx context.Context, cfg Config) (*Link, error) {
	S := len(cfg.Peers)
	switch {
	case cfg.Endpoint == nil:
		return nil, fmt.Errorf("%w: Endpoint is required", ErrConfig)
	case cfg.Self < 0 || cfg.Self >= S:
		return nil, fmt.Errorf("%w: stage %d of %d", ErrConfig, cfg.Self, S)
	case cfg.MaxFrame < pipeline.FrameHeaderLen:
		return nil, fmt.Errorf("%w: MaxFrame %d", ErrConfig, cfg.MaxFrame)
	case cfg.MaxPending < 0:
		return nil, fmt.Errorf("%w: MaxPending %d", ErrConfig, cfg.MaxPending)
	}
	if cfg.MaxPending == 0 {
		cfg.MaxPending = DefaultMaxPending
	}
	byID := map[transport.NodeID]int{}
	for s, p := range cfg.Peers {
		if _, dup := byID[p.ID]; dup {
			return nil, fmt.Errorf("%w: stages %d and %d have the same key", ErrConfig, byID[p.ID], s)
		}
		byID[p.ID] = s
	}
	runCtx, stop := context.WithCancel(context.Background())
	l := &Link{self: cfg.Self, peers: map[int]*peerConn{}, stop: stop}
	fail := func(err error) (*Link, error) {
		l.Close()
		return nil, err
	}
	var lower int
	for _, s := range Neighbours(cfg.Self, S) {
		if s < cfg.Self {
			lower++
			continue
		}
		conn, err := dial(ctx, cfg.Endpoint, cfg.Peers[s])
		if err != nil {
			return fail(fmt.Errorf("quiclink: stage %d: dial stage %d at %s: %w", cfg.Self, s, cfg.Peers[s].Addr, err))
		}
		l.peers[s] = &peerConn{stage: s, conn: conn}
	}
	for lower > 0 {
		conn, err := cfg.Endpoint.Accept(ctx)
		if err != nil {
			return fail(fmt.Errorf("quiclink: stage %d: accept: %w", cfg.Self, err))
		}
		s, ok := byID[conn.Peer()]
		if !ok || s >= cfg.Self || l.peers[s] != nil || !isNeighbour(cfg.Self, S, s) {
			conn.CloseWithError(1, "not a stage expected to dial")
			continue
		}
		l.peers[s] = &peerConn{stage: s, conn: conn}
		lower--
	}
	// Streams: each side opens its own and says hello; then accepts the peer's.
	for _, p := range l.peers {
		out, err := p.conn.OpenStream(ctx)
		if err != nil {
			return fail(fmt.Errorf("quiclink: stage %d: stream to stage %d: %w", cfg.Self, p.stage, err))
		}
		var h transport.Header
		h.Type = helloType
		if err := h.SetBody(hello{Stage: cfg.Self}); err != nil {
			return fail(err)
		}
		if err := transport.WriteMessage(out, h, nil); err != nil {
			return fail(fmt.Errorf("quiclink: stage %d: hello to stage %d: %w", cfg.Self, p.stage, err))
		}
		p.out = out
	}
	for _, p := range l.peers {
		in, err := p.conn.AcceptStream(ctx)
		if err != nil {
			return fail(fmt.Errorf("quiclink: stage %d: stream from stage %d: %w", cfg.Self, p.stage, err))
		}
		m, err := transport.ReadMessage(in, 1) // a hello has no payload
		if err != nil {
			return fail(fmt.Errorf("%w: stage %d: hello from stage %d: %w", pipeline.ErrFrame, cfg.Self, p.stage, err))
		}
		var h hello
		if m.Type != helloType || m.DecodeBody(&h) != nil || h.Stage != p.stage || len(m.Payload) != 0 {
			return fail(fmt.Errorf("%w: stage %d: the peer with stage %d's key sent no hello as stage %d (type %q)", pipeline.ErrFrame, cfg.Self, p.stage, p.stage, m.Type))
		}
		p.in = make(chan pipeline.Frame, cfg.MaxPending)
		p.done = make(chan struct{})
		l.wg.Add(1)
		go l.read(runCtx, p, in, int64(cfg.MaxFrame))
	}
	return l, nil
}

// redialEvery is how soon a dial that failed is tried again.
const redialEvery = 200 * time.Millisecond

// dial connects to p, trying again until ctx ends while p is not up yet (the group's processes
// start in any order); an endpoint at p's address with another key, or one the endpoint's Allow
// refuses, is an error at once.
func dial(ctx context.Context, ep *transport.Endpoint, p Peer) (*transport.Conn, error) {
	var last error
	for {
		conn, err := ep.DialNode(ctx, p.Addr, p.ID)
		if err == nil {
			return conn, nil
		}
		if errors.Is(err, transport.ErrUnexpectedPeer) || errors.Is(err, transport.ErrPeerNotAllowed) {
			return nil, err
		}
		if ctx.Err() == nil || last == nil {
			last = err
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("%w (last: %w)", ctx.Err(), last)
		case <-time.After(redialEvery):
		}
	}
}

func isNeighbour(self, stages, s int) bool {
	for _, n := range Neighbours(self, stages) {
		if n == s {
			return true
		}
	}
	return false
}

// read queues the frames of p's stream until it ends or fails.
func (l *Link) read(ctx context.Context, p *peerConn, in *transport.Stream, maxFrame int64) {
	defer l.wg.Done()
	defer close(p.done)
	for {
		m, err := transport.ReadMessage(in, maxFrame)
		switch {
		case errors.Is(err, io.EOF):
			p.err = fmt.Errorf("quiclink: stage %d closed its stream: %w", p.stage, io.EOF)
			return
		case errors.Is(err, transport.ErrBadMagic), errors.Is(err, transport.ErrHeaderTooLarge), errors.Is(err, transport.ErrPayloadTooLarge),
			errors.Is(err, transport.ErrTruncated), errors.Is(err, transport.ErrChecksum), errors.Is(err, transport.ErrMalformedHeader):
			p.err = fmt.Errorf("%w: from stage %d: %w", pipeline.ErrFrame, p.stage, err)
			p.conn.CloseWithError(2, "malformed frame")
			return
		case err != nil:
			p.err = fmt.Errorf("quiclink: from stage %d: %w", p.stage, err)
			return
		case m.Type != frameType:
			p.err = fmt.Errorf("%w: from stage %d: message type %q, want %q", pipeline.ErrFrame, p.stage, m.Type, frameType)
			p.conn.CloseWithError(2, "not a frame")
			return
		}
		f, err := pipeline.ParseFrame(m.Payload)
		if err != nil {
			p.err = fmt.Errorf("from stage %d: %w", p.stage, err)
			p.conn.CloseWithError(2, "malformed frame")
			return
		}
		select {
		case p.in <- f:
		case <-ctx.Done():
			p.err = ctx.Err()
			return
		}
	}
}

func (l *Link) peer(s int) (*peerConn, error) {
	p := l.peers[s]
	if p == nil {
		return nil, fmt.Errorf("%w: stage %d has no link to stage %d", ErrConfig, l.self, s)
	}
	return p, nil
}

// Send writes f to stage to's reader.
func (l *Link) Send(ctx context.Context, to int, f pipeline.Frame) error {
	p, err := l.peer(to)
	if err != nil {
		return err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return err
	}
	return transport.WriteMessage(p.out, transport.Header{Type: frameType}, f.AppendBinary(make([]byte, 0, f.Size())))
}

// Recv returns the next frame from stage from.
func (l *Link) Recv(ctx context.Context, from int) (pipeline.Frame, error) {
	p, err := l.peer(from)
	if err != nil {
		return pipeline.Frame{}, err
	}
	select {
	case f := <-p.in:
		return f, nil
	case <-ctx.Done():
		return pipeline.Frame{}, ctx.Err()
	case <-p.done:
		select { // frames queued before the stream ended come first
		case f := <-p.in:
			return f, nil
		default:
		}
		return pipeline.Frame{}, p.err
	}
}

// Stats sums the transport counters of the link's connections.
func (l *Link) Stats() transport.Stats {
	var t transport.Stats
	for _, p := range l.peers {
		t = t.Plus(p.conn.Stats())
	}
	return t
}

// Shutdown ends the link gracefully once the stage has sent and read every frame it meant to:
// it ends its own streams (every frame written stays deliverable) and waits until each peer's
// stream has ended too (or its connection failed, or ctx ended), then closes the link. Closing a
// QUIC connection at once would drop what the peer has not read yet.
func (l *Link) Shutdown(ctx context.Context) error {
	for _, p := range l.peers {
		p.mu.Lock()
		if p.out != nil {
			p.out.Close()
		}
		p.mu.Unlock()
	}
	for _, p := range l.peers {
		if p.done == nil {
			continue
		}
		select {
		case <-p.done:
		case <-ctx.Done():
		}
	}
	return l.Close()
}

// Close closes the link's connections and waits for its readers.
func (l *Link) Close() error {
	l.stop()
	for _, p := range l.peers {
		p.conn.Close()
	}
	l.wg.Wait()
	return nil
}
