package transport

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
)

// Stream error codes sent when a request stream is abandoned.
const (
	codeCanceled uint64 = 0x10
	codeBadFrame uint64 = 0x11
)

// ErrUnknownType is returned (to the caller, as a RemoteError) when a Mux has no handler
// for a message type.
var ErrUnknownType = errors.New("transport: no handler for message type")

// RemoteError is a handler's error as seen by the caller.
type RemoteError struct {
	Type string // the request type
	Msg  string // the handler's error text
}

func (e *RemoteError) Error() string { return fmt.Sprintf("transport: remote %s: %s", e.Type, e.Msg) }

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
	if reply.ID != req.ID {
		return Message{}, fmt.Errorf("%w: reply id %d to request %d", ErrMalformedHeader, reply.ID, req.ID)
	}
	if reply.Err != "" {
		return reply, &RemoteError{Type: req.Type, Msg: reply.Err}
	}
	return reply, nil
}

func exchange(st *Stream, req Message, maxPayload int64) (Message, error) {
	if err := WriteMessage(st, req.Header, req.Payload); err != nil {
		return Message{}, err
	}
	if err := st.Close(); err != nil {
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

// Serve answers every stream c's peer opens with h, each in its own goroutine, until c
// closes or ctx is done. It waits for running handlers before returning.
func Serve(ctx context.Context, c *Conn, h Handler) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		st, err := c.AcceptStream(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return err
		}
		wg.Go(func() { serveStream(ctx, c, st, h) })
	}
}

// connKey carries the *Conn of a request in the handler's context.
type connKey struct{}

// ConnFromContext returns the connection a request arrived on, inside a Handler.
func ConnFromContext(ctx context.Context) (*Conn, bool) {
	c, ok := ctx.Value(connKey{}).(*Conn)
	return c, ok
}

func serveStream(ctx context.Context, c *Conn, st *Stream, h Handler) {
	ctx = context.WithValue(ctx, connKey{}, c)
	stop := context.AfterFunc(ctx, func() { st.Abort(codeCanceled) })
	defer stop()
	req, err := ReadMessage(st, c.maxPayload)
	if err == nil {
		err = expectEOF(st)
	}
	if err != nil {
		st.Abort(codeBadFrame)
		return
	}
	reply, err := h(ctx, c.peer, req)
	if err != nil {
		reply = Message{Header: Header{Type: req.Type, Err: err.Error()}}
		if reply.Err == "" {
			reply.Err = "error"
		}
	}
	reply.ID = req.ID
	if err := WriteMessage(st, reply.Header, reply.Payload); err != nil {
		st.Abort(codeCanceled)
		return
	}
	st.Close()
}

// Serve accepts connections and serves each with h (see the function Serve) until ctx is
// done or the endpoint is closed. It waits for its connections' handlers before returning.
func (e *Endpoint) Serve(ctx context.Context, h Handler) error {
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
			Serve(ctx, c, h)
			c.Close()
		})
	}
}

// Mux routes requests to handlers by message type.
type Mux struct {
	mu sync.RWMutex
	m  map[string]Handler
}

// NewMux returns an empty Mux.
func NewMux() *Mux { return &Mux{m: make(map[string]Handler)} }

// Handle registers h for typ. Registering a type twice is a programming error and panics.
func (m *Mux) Handle(typ string, h Handler) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, dup := m.m[typ]; dup {
		panic("transport: Mux: duplicate handler for type " + typ)
	}
	m.m[typ] = h
}

// Serve is a Handler that dispatches on req.Type.
func (m *Mux) Serve(ctx context.Context, peer NodeID, req Message) (Message, error) {
	m.mu.RLock()
	h := m.m[req.Type]
	m.mu.RUnlock()
	if h == nil {
		return Message{}, fmt.Errorf("%w %q", ErrUnknownType, req.Type)
	}
	return h(ctx, peer, req)
}
