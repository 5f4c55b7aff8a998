package transport

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"sync"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/cohortlab/cohort/internal/wirecode"
)

// Stream error codes sent when a request stream is abandoned.
const (
	codeCanceled uint64 = 0x10
	codeBadFrame uint64 = 0x11
	codeRefused  uint64 = 0x12 // refused from its header: the payload is not read
)

// ErrBusy is returned (to the caller, as a RemoteError) when the endpoint already serves
// Config.MaxServing requests; the request is not read. Retrying later may succeed.
var ErrBusy error = wirecode.New(1, "transport: server busy")

// ErrTooSlow is returned (to the caller, as a RemoteError) when a request's header or payload
// did not arrive in the time Config.RequestTimeout and MinRate give it; the stream is then
// closed for reading.
var ErrTooSlow error = wirecode.New(2, "transport: request too slow")

// ErrUnknownType is returned (to the caller, as a RemoteError) when a Mux has no handler
// for a message type.
var ErrUnknownType error = wirecode.New(3, "transport: no handler for message type")

// RemoteError is a handler's error as seen by the caller. It matches, with errors.Is, the
// sentinel errors of its Code (those declared with internal/wirecode: transport's, consensus's,
// protocol's), so callers never read its text to classify it.
type RemoteError struct {
	Type string // the request type
	Code uint16 // the wire code of the sentinel the handler wrapped; 0 for none
	Msg  string // the handler's error text
}

func (e *RemoteError) Error() string { return fmt.Sprintf("transport: remote %s: %s", e.Type, e.Msg) }

// WireCode is e's code: a handler that returns a RemoteError (a forwarded reply) passes it on.
func (e *RemoteError) WireCode() uint16 { return e.Code }

// Is reports whether target is a sentinel of e's code.
func (e *RemoteError) Is(target error) bool { return e.Code != 0 && wirecode.Of(target) == e.Code }

// Reason is the remote error as its handler wrote it — its text without the transport's prefix —
// still matching the sentinels of its code: what a client hands its caller.
func (e *RemoteError) Reason() error { return wirecode.New(e.Code, e.Msg) }

// Handler answers one request from peer. A returned error is sent to the caller as the
// reply's Err (and becomes a *RemoteError there); the reply's ID is set to the request's.
type Handler func(ctx context.Context, peer NodeID, req Message) (Message, error)

// Call sends req on a new stream of c and waits for the reply (one request-response per
// stream). Cancelling ctx resets the stream. Replies larger than the connection's
// MaxPayload are refused with ErrPayloadTooLarge.
func Call(ctx context.Context, c *Conn, req Message) (Message, error) {
	st, err := c.OpenStream(ctx)
	if err != nil {
		return Message{}, err
	}
	stop := context.AfterFunc(ctx, func() { st.Abort(codeCanceled) })
	defer stop()
	reply, err := exchange(st, req, c.maxPayload)
	if err != nil {
		st.Abort(codeCanceled)
		if ctxErr := ctx.Err(); ctxErr != nil {
			return Message{}, fmt.Errorf("transport: call %s to %s: %w", req.Type, c.peer, ctxErr)
		}
		return Message{}, fmt.Errorf("transport: call %s to %s: %w", req.Type, c.peer, err)
	}
	if reply.Err != "" && (reply.ID == req.ID || reply.ID == 0) { // 0: refused before its header was read
		return reply, &RemoteError{Type: req.Type, Code: reply.Code, Msg: reply.Err}
	}
	if reply.ID != req.ID {
		return Message{}, fmt.Errorf("%w: reply id %d to request %d", ErrMalformedHeader, reply.ID, req.ID)
	}
	return reply, nil
}

func exchange(st *Stream, req Message, maxPayload int64) (Message, error) {
	err := WriteMessage(st, req.Header, req.Payload)
	if err == nil {
		err = st.Close()
	}
	if err != nil {
		// A server that refuses a request from its header (unknown type, payload above the
		// type's limit) stops reading the payload and replies at once: its reply, if one
		// came, says why, and is worth more than the write error.
		if reply, rerr := ReadMessage(st, maxPayload); rerr == nil && reply.Err != "" {
			expectEOF(st) // lets the stream be retired
			return reply, nil
		}
		return Message{}, err
	}
	reply, err := ReadMessage(st, maxPayload)
	if err == io.EOF {
		return Message{}, fmt.Errorf("%w: stream closed without a reply", ErrTruncated)
	}
	if err != nil {
		return Message{}, err
	}
	return reply, expectEOF(st)
}

// ErrTrailingData is returned when a stream carries more than its one message.
var ErrTrailingData = errors.New("transport: data after the message on a one-message stream")

// expectEOF reads the end of the stream. Besides checking that exactly one message came,
// this is what lets quic-go retire the stream and give the peer its stream credit back:
// a stream whose FIN was never read stays open and, after MaxIncomingStreams calls,
// the connection would accept no more.
func expectEOF(st *Stream) error {
	var b [1]byte
	for {
		n, err := st.Read(b[:])
		if n > 0 {
			return ErrTrailingData
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// Router decides how a request is served from its header, before any payload byte is read:
// the handler, and the largest payload this request may carry (further capped by the
// connection's MaxPayload). A non-nil error refuses the request: its text is the reply's
// Err, and the payload is never read.
type Router interface {
	Route(ctx context.Context, peer NodeID, h Header) (Handler, int64, error)
}

// Route makes h a Router that serves every request with payloads up to the connection's
// MaxPayload.
func (h Handler) Route(context.Context, NodeID, Header) (Handler, int64, error) {
	return h, math.MaxInt64, nil
}

// Serve answers every stream c's peer opens with r, each in its own goroutine, until c
// closes or ctx is done. At most the endpoint's MaxConcurrentRequests streams of c are
// served at once (further streams wait until one ends), and at most MaxServing over all the
// endpoint's connections (a stream beyond it is answered with ErrBusy). It waits for running
// handlers before returning.
func Serve(ctx context.Context, c *Conn, r Router) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	slots := make(chan struct{}, c.limits.maxRequests)
	for {
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
			return ctx.Err()
		case <-c.Context().Done():
			return fmt.Errorf("transport: accept stream from %s: %w", c.peer, context.Cause(c.Context()))
		}
		st, err := c.AcceptStream(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return err
		}
		wg.Go(func() {
			defer func() { <-slots }()
			if err := c.limits.serving.start(c.source); err != nil {
				refuse(st, c, Message{}, err)
				return
			}
			defer c.limits.serving.done(c.source)
			serveStream(ctx, c, st, r)
		})
	}
}

// connKey carries the *Conn of a request in the handler's context.
type connKey struct{}

// ConnFromContext returns the connection a request arrived on, inside a Handler.
func ConnFromContext(ctx context.Context) (*Conn, bool) {
	c, ok := ctx.Value(connKey{}).(*Conn)
	return c, ok
}

// serveStream reads one request, routes it from its header and answers it. The header must
// arrive within RequestTimeout of the stream being taken up, the payload within
// RequestTimeout plus its size at MinRate, and the reply must leave as fast.
func serveStream(ctx context.Context, c *Conn, st *Stream, r Router) {
	ctx = context.WithValue(ctx, connKey{}, c)
	stop := context.AfterFunc(ctx, func() { st.Abort(codeCanceled) })
	defer stop()
	lim := c.limits
	st.s.SetReadDeadline(time.Now().Add(lim.requestTimeout))
	wh, err := readHeader(st)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		refuse(st, c, Message{}, fmt.Errorf("%w: header not received within %v (RequestTimeout)", ErrTooSlow, lim.requestTimeout))
		return
	}
	if badFrame(err) {
		refuse(st, c, Message{}, err) // a sender that speaks the protocol wrongly learns how
		return
	}
	if err != nil {
		st.Abort(codeBadFrame)
		return
	}
	h, maxPayload, err := r.Route(ctx, c.peer, wh.header())
	if err == nil {
		err = checkPayloadLen(wh, min(maxPayload, c.maxPayload))
	}
	if err != nil {
		// Refused from the header: the payload is never read.
		refuse(st, c, Message{Header: Header{Type: wh.Type, ID: wh.ID}}, err)
		return
	}
	budget := lim.transferTime(wh.Len)
	st.s.SetReadDeadline(time.Now().Add(budget))
	req, err := readBody(st, wh)
	if err == nil {
		err = expectEOF(st)
	}
	if errors.Is(err, os.ErrDeadlineExceeded) {
		refuse(st, c, Message{Header: Header{Type: wh.Type, ID: wh.ID}}, fmt.Errorf("%w: %s payload of %d bytes not received within %v (RequestTimeout %v plus its size at MinRate %d B/s)",
			ErrTooSlow, wh.Type, wh.Len, budget, lim.requestTimeout, lim.minRate))
		return
	}
	if badFrame(err) {
		refuse(st, c, Message{Header: Header{Type: wh.Type, ID: wh.ID}}, err)
		return
	}
	if err != nil {
		st.Abort(codeBadFrame) // the stream ended or was reset: nobody to tell
		return
	}
	st.s.SetReadDeadline(time.Time{})
	out, err := h(ctx, c.peer, req)
	if err != nil {
		out = Message{Header: Header{Type: req.Type}}
	}
	out.ID = req.ID
	reply(st, lim, out, err)
}

// badFrame reports a frame error the sender can be told about (not an ended or reset stream).
func badFrame(err error) bool {
	for _, e := range []error{ErrBadMagic, ErrHeaderTooLarge, ErrMalformedHeader, ErrChecksum, ErrTrailingData} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// refuse stops reading st and answers it with err.
func refuse(st *Stream, c *Conn, out Message, err error) {
	st.s.CancelRead(quic.StreamErrorCode(codeRefused))
	c.limits.refuse(c.peer, err)
	reply(st, c.limits, out, err)
}

// reply sends out (or err as the reply's Err) and ends the stream.
func reply(st *Stream, lim connLimits, out Message, err error) {
	if err != nil {
		out = Message{Header: Header{Type: out.Type, ID: out.ID, Err: err.Error(), Code: wirecode.Of(err)}}
		if out.Err == "" {
			out.Err = "error"
		}
	}
	st.s.SetWriteDeadline(time.Now().Add(lim.transferTime(uint64(len(out.Payload) + len(out.Body)))))
	if err := WriteMessage(st, out.Header, out.Payload); err != nil {
		st.Abort(codeCanceled)
		return
	}
	st.Close()
}

// Serve accepts connections and serves each with r (see the function Serve) until ctx is
// done or the endpoint is closed. It waits for its connections' handlers before returning.
func (e *Endpoint) Serve(ctx context.Context, r Router) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		c, err := e.Accept(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return err
		}
		wg.Go(func() {
			Serve(ctx, c, r)
			c.Close()
		})
	}
}

// Limit bounds the request payload of one message type (see Mux.Handle). Either way the
// connection's MaxPayload caps it too.
type Limit struct {
	// MaxPayload caps the payload a request may announce. Zero means the type carries no
	// payload: a request announcing any is refused.
	MaxPayload int64
	// Payload, if set, is asked instead of MaxPayload, with the request's header and sender:
	// for types whose size follows from the header body (an upload's from the slice it names).
	// It returns the cap for this request, or an error that refuses it before its payload is
	// read.
	Payload func(ctx context.Context, peer NodeID, h Header) (int64, error)
}

type route struct {
	h   Handler
	lim Limit
}

// Mux routes requests to handlers by message type. As a Router it refuses an unknown type,
// and a payload above its type's Limit, from the header alone.
type Mux struct {
	mu sync.RWMutex
	m  map[string]route
}

// NewMux returns an empty Mux.
func NewMux() *Mux { return &Mux{m: make(map[string]route)} }

// Handle registers h for typ, whose requests may carry what lim allows. Registering a type
// twice, or a negative MaxPayload, is a programming error and panics.
func (m *Mux) Handle(typ string, h Handler, lim Limit) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, dup := m.m[typ]; dup {
		panic("transport: Mux: duplicate handler for type " + typ)
	}
	if lim.MaxPayload < 0 {
		panic(fmt.Sprintf("transport: Mux: negative MaxPayload %d for type %s", lim.MaxPayload, typ))
	}
	m.m[typ] = route{h: h, lim: lim}
}

// Route implements Router.
func (m *Mux) Route(ctx context.Context, peer NodeID, h Header) (Handler, int64, error) {
	m.mu.RLock()
	rt, ok := m.m[h.Type]
	m.mu.RUnlock()
	if !ok {
		return nil, 0, fmt.Errorf("%w %q", ErrUnknownType, h.Type)
	}
	if rt.lim.Payload == nil {
		return rt.h, rt.lim.MaxPayload, nil
	}
	n, err := rt.lim.Payload(ctx, peer, h)
	if err != nil {
		return nil, 0, err
	}
	return rt.h, n, nil
}

// Serve is a Handler that dispatches an already read request on req.Type, checking its
// payload against the type's Limit.
func (m *Mux) Serve(ctx context.Context, peer NodeID, req Message) (Message, error) {
	h, limit, err := m.Route(ctx, peer, req.Header)
	if err != nil {
		return Message{}, err
	}
	if int64(len(req.Payload)) > limit {
		return Message{}, fmt.Errorf("%w: %s payload of %d bytes, limit %d", ErrPayloadTooLarge, req.Type, len(req.Payload), max(limit, 0))
	}
	return h(ctx, peer, req)
}
