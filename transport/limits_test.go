package transport

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/vmihailenco/msgpack/v5"
)

// servedPair starts a server with srvCfg serving r, dials it with a fresh client key (seed)
// and returns the client connection and the server's side of it.
func servedPair(t *testing.T, r Router, srvCfg Config, seed byte) (cli, srv *Conn) {
	t.Helper()
	srvCfg.Identity = testIdentity(t, 1)
	ep, err := ListenAddr("127.0.0.1:0", srvCfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	accepted := make(chan *Conn, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		c, err := ep.Accept(ctx)
		if err != nil {
			return
		}
		accepted <- c
		Serve(ctx, c, r)
	}()
	cli, err = Dial(testCtx(t, 10*time.Second), ep.Addr().String(), Config{Identity: testIdentity(t, seed)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cli.Close()
		cancel()
		ep.Close()
		<-done
	})
	select {
	case srv = <-accepted:
	case <-time.After(10 * time.Second):
		t.Fatal("server accepted no connection")
	}
	return cli, srv
}

// TestMuxRefusesFromHeader: a request of an unknown type, or announcing more payload than its
// type's Limit, is answered with the reason at once and its payload is not read (the server
// receives a small fraction of what the client tries to send).
func TestMuxRefusesFromHeader(t *testing.T) {
	echo := func(_ context.Context, _ NodeID, req Message) (Message, error) {
		return Message{Header: Header{Type: "ok"}, Payload: req.Payload}, nil
	}
	mux := NewMux()
	mux.Handle("none", echo, Limit{})
	mux.Handle("small", echo, Limit{MaxPayload: 1000})
	mux.Handle("sized", echo, Limit{Payload: func(_ context.Context, _ NodeID, h Header) (int64, error) {
		var n int64
		if err := h.DecodeBody(&n); err != nil {
			return 0, err
		}
		if n < 0 {
			return 0, errors.New("negative size in the body")
		}
		return n, nil
	}})
	refused := make(chan error, 16)
	cli, srv := servedPair(t, mux, Config{Refused: func(peer NodeID, err error) {
		if peer != testIdentity(t, 2).NodeID() {
			err = fmt.Errorf("refusal reported for %s: %w", peer, err)
		}
		refused <- err
	}}, 2)
	ctx := testCtx(t, 30*time.Second)
	body := func(v int64) []byte {
		b, err := msgpack.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	big := make([]byte, 40<<20)
	for _, tc := range []struct {
		name    string
		req     Message
		wantErr string // "" means the call succeeds
	}{
		{"unknown type", Message{Header: Header{Type: "nope"}, Payload: big}, `no handler for message type "nope"`},
		{"payload on a no-payload type", Message{Header: Header{Type: "none"}, Payload: big}, "none payload of 41943040 bytes, limit 0"},
		{"above the type limit", Message{Header: Header{Type: "small"}, Payload: big}, "small payload of 41943040 bytes, limit 1000"},
		{"above the size the header gives", Message{Header: Header{Type: "sized", Body: body(4096)}, Payload: big}, "limit 4096"},
		{"hook refuses", Message{Header: Header{Type: "sized", Body: body(-1)}, Payload: big}, "negative size in the body"},
		{"within the limit", Message{Header: Header{Type: "small"}, Payload: make([]byte, 1000)}, ""},
		{"within the size the header gives", Message{Header: Header{Type: "sized", Body: body(3 << 20)}, Payload: big[:3<<20]}, ""},
		{"no payload", Message{Header: Header{Type: "none"}}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := srv.Stats().BytesReceived
			start := time.Now()
			reply, err := Call(ctx, cli, tc.req)
			received := srv.Stats().BytesReceived - before
			if tc.wantErr == "" {
				if err != nil || len(reply.Payload) != len(tc.req.Payload) {
					t.Fatalf("err = %v, reply of %d bytes", err, len(reply.Payload))
				}
				return
			}
			var re *RemoteError
			if !errors.As(err, &re) || !strings.Contains(re.Msg, tc.wantErr) {
				t.Fatalf("err = %v, want a remote error containing %q", err, tc.wantErr)
			}
			select {
			case got := <-refused:
				if got.Error() != re.Msg {
					t.Fatalf("Refused was told %q, the caller %q", got, re.Msg)
				}
			default:
				t.Fatal("Refused was not told")
			}
			// The server's windows start at 1 MiB per stream and 2 MiB per connection, and
			// the payload is never read: far less than the 40 MiB sent can arrive.
			if received > 8<<20 {
				t.Fatalf("server received %d bytes of a refused request", received)
			}
			if d := time.Since(start); d > 5*time.Second {
				t.Fatalf("refusal took %v", d)
			}
		})
	}
	// A Mux used as a Handler (messages already read) applies the same limits.
	if _, err := mux.Serve(ctx, NodeID{}, Message{Header: Header{Type: "small"}, Payload: make([]byte, 1001)}); !errors.Is(err, ErrPayloadTooLarge) {
		t.Fatalf("Mux.Serve with an oversized payload: err = %v", err)
	}
	if _, err := mux.Serve(ctx, NodeID{}, Message{Header: Header{Type: "nope"}}); !errors.Is(err, ErrUnknownType) {
		t.Fatalf("Mux.Serve with an unknown type: err = %v", err)
	}
}

func TestMuxNegativeLimitPanics(t *testing.T) {
	defer func() {
		if r := recover(); r == nil || !strings.Contains(r.(string), "negative MaxPayload -1") {
			t.Fatalf("recover() = %v", r)
		}
	}()
	NewMux().Handle("a", func(context.Context, NodeID, Message) (Message, error) { return Message{}, nil }, Limit{MaxPayload: -1})
}

// TestStoreLimitsPushes: a put names a chunk of a push its sender offered, and may carry that
// chunk's size and no more; a pull-only store does not know the push types.
func TestStoreLimitsPushes(t *testing.T) {
	store := NewStore(StoreConfig{})
	mux := NewMux()
	store.Register(mux)
	cli, _ := servedPair(t, mux, Config{}, 2)
	ctx := testCtx(t, 20*time.Second)
	data := randomBlob(3*MinChunkSize+10, 3)
	m, err := NewManifest(data, MinChunkSize)
	if err != nil {
		t.Fatal(err)
	}
	root := m.Root()
	put := func(i int, payload []byte) error {
		req := Message{Header: Header{Type: TypePut}, Payload: payload}
		if err := req.SetBody(putBody{chunkRef: chunkRef{Root: root[:], Index: i}, Tag: "t"}); err != nil {
			t.Fatal(err)
		}
		_, err := Call(ctx, cli, req)
		return err
	}
	if err := put(0, data[:MinChunkSize]); err == nil || !strings.Contains(err.Error(), "no offer for") {
		t.Fatalf("put before an offer: err = %v", err)
	}
	offer := Message{Header: Header{Type: TypeOffer}, Payload: m.MarshalBinary()}
	if err := offer.SetBody(offerBody{Tag: "t"}); err != nil {
		t.Fatal(err)
	}
	if _, err := Call(ctx, cli, offer); err != nil {
		t.Fatal(err)
	}
	if err := put(3, make([]byte, MinChunkSize)); err == nil || !strings.Contains(err.Error(), "xfer.put payload of 1024 bytes, limit 10") {
		t.Fatalf("put of a whole chunk for the 10-byte last one: err = %v", err)
	}
	if err := put(7, nil); err == nil || !strings.Contains(err.Error(), "chunk 7 out of range") {
		t.Fatalf("put of chunk 7 of 4: err = %v", err)
	}
	if err := put(0, data[:MinChunkSize]); err != nil {
		t.Fatal(err)
	}

	pull := NewStore(StoreConfig{PullOnly: true})
	pmux := NewMux()
	pull.Register(pmux)
	pcli, _ := servedPair(t, pmux, Config{}, 3)
	if _, err := Call(ctx, pcli, offer); err == nil || !strings.Contains(err.Error(), "no handler for message type") {
		t.Fatalf("offer to a pull-only store: err = %v", err)
	}
}

// rawStream opens a stream on c and writes b without ending the stream.
func rawStream(t *testing.T, ctx context.Context, c *Conn, b []byte) *Stream {
	t.Helper()
	st, err := c.OpenStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Write(b); err != nil {
		t.Fatal(err)
	}
	return st
}

// waitRefusal reads st until the server answers it, or fails after limit; it returns how long
// that took and the answer's error text. The server has stopped reading: a write fails.
func waitRefusal(t *testing.T, st *Stream, limit time.Duration) (time.Duration, string) {
	t.Helper()
	start := time.Now()
	st.SetDeadline(start.Add(limit))
	m, err := ReadMessage(st, 0)
	if err != nil {
		t.Fatalf("read on a stalled stream: err = %v after %v, want the server's refusal", err, time.Since(start))
	}
	took := time.Since(start)
	var se *quic.StreamError
	for deadline := time.Now().Add(2 * time.Second); ; {
		_, err := st.Write([]byte{0})
		if errors.As(err, &se) && se.Remote && se.ErrorCode == quic.StreamErrorCode(codeRefused) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("writes to a refused stream still go: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return took, m.Err
}

// TestStalledRequestsAreRefused: a stream that sends one byte and stalls, or a header and then
// a payload too slowly, is answered with ErrTooSlow naming the limit once its time is up and
// closed for reading, and frees its place.
func TestStalledRequestsAreRefused(t *testing.T) {
	h := Handler(func(_ context.Context, _ NodeID, req Message) (Message, error) {
		return Message{Header: Header{Type: "ok"}}, nil
	})
	cli, _ := servedPair(t, h, Config{RequestTimeout: 300 * time.Millisecond, MinRate: 1 << 20, MaxConcurrentRequests: 1}, 2)
	ctx := testCtx(t, 20*time.Second)

	one := rawStream(t, ctx, cli, []byte{'C'})
	d, msg := waitRefusal(t, one, 5*time.Second)
	if d < 200*time.Millisecond || !strings.Contains(msg, "request too slow: header not received within 300ms (RequestTimeout)") {
		t.Fatalf("a one-byte stream was refused after %v with %q, want after its 300 ms naming the limit", d, msg)
	}
	// A header announcing 2 MiB at ≥ 1 MiB/s has 300 ms + 2 s; half a payload then a stall
	// is reset then.
	frame := frameBytes(t, Header{Type: "x"}, make([]byte, 2<<20))
	slow := rawStream(t, ctx, cli, frame[:len(frame)/2])
	d, msg = waitRefusal(t, slow, 8*time.Second)
	if d < 2*time.Second || !strings.Contains(msg, "x payload of 2097152 bytes not received within 2.3s (RequestTimeout 300ms plus its size at MinRate 1048576 B/s)") {
		t.Fatalf("a slow payload was refused after %v with %q, want after its 2.3 s naming the limit", d, msg)
	}
	// The one place (MaxConcurrentRequests 1) is free again.
	if _, err := Call(ctx, cli, Message{Header: Header{Type: "x"}}); err != nil {
		t.Fatal(err)
	}
}

// TestConcurrentRequestsBounded: a connection has at most MaxConcurrentRequests requests in
// its handlers; the others wait and are served after.
func TestConcurrentRequestsBounded(t *testing.T) {
	var running, peak atomic.Int32
	release := make(chan struct{})
	h := Handler(func(_ context.Context, _ NodeID, req Message) (Message, error) {
		n := running.Add(1)
		defer running.Add(-1)
		for {
			p := peak.Load()
			if n <= p || peak.CompareAndSwap(p, n) {
				break
			}
		}
		<-release
		return Message{Header: Header{Type: "ok"}}, nil
	})
	cli, _ := servedPair(t, h, Config{MaxConcurrentRequests: 3}, 2)
	ctx := testCtx(t, 20*time.Second)
	var wg sync.WaitGroup
	errs := make(chan error, 10)
	for i := range 10 {
		wg.Go(func() {
			_, err := Call(ctx, cli, Message{Header: Header{Type: "x", ID: uint64(i)}})
			errs <- err
		})
	}
	for deadline := time.Now().Add(5 * time.Second); running.Load() < 3 && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond) // room for a fourth, if the bound did not hold
	if got := peak.Load(); got != 3 {
		t.Fatalf("%d requests ran at once, want 3", got)
	}
	close(release)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
}

// closedWith waits for c to close and returns the peer's application error.
func closedWith(t *testing.T, c *Conn) *quic.ApplicationError {
	t.Helper()
	select {
	case <-c.Context().Done():
	case <-time.After(5 * time.Second):
		t.Fatal("connection over the limit was not closed")
	}
	var ae *quic.ApplicationError
	if !errors.As(context.Cause(c.Context()), &ae) || !ae.Remote {
		t.Fatalf("closed with %v, want the server's application error", context.Cause(c.Context()))
	}
	return ae
}

// TestConnLimits: an endpoint accepts at most MaxConnsPerKey connections from one key and
// MaxConnsPerSource from one address; the next is closed with CodeConnLimit and a reason
// naming the limit, and a closed connection frees its place.
func TestConnLimits(t *testing.T) {
	var limited atomic.Int32
	srv, err := ListenAddr("127.0.0.1:0", Config{Identity: testIdentity(t, 1), MaxConnsPerKey: 2, MaxConnsPerSource: 3,
		Refused: func(_ NodeID, err error) {
			if errors.Is(err, ErrConnLimit) {
				limited.Add(1)
			}
		}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan struct{})
	go func() {
		srv.Serve(ctx, Handler(func(context.Context, NodeID, Message) (Message, error) {
			return Message{Header: Header{Type: "ok"}}, nil
		}))
		close(served)
	}()
	defer func() { cancel(); srv.Close(); <-served }()
	cli, err := NewEndpoint(mustUDP(t), Config{Identity: testIdentity(t, 2)})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	dctx := testCtx(t, 20*time.Second)
	dial := func(e *Endpoint) *Conn {
		c, err := e.Dial(dctx, srv.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	a, b := dial(cli), dial(cli)
	for _, c := range []*Conn{a, b} {
		if _, err := Call(dctx, c, Message{Header: Header{Type: "x"}}); err != nil {
			t.Fatal(err)
		}
	}
	ae := closedWith(t, dial(cli))
	if ae.ErrorCode != CodeConnLimit || !strings.Contains(ae.ErrorMessage, "too many connections from key") || !strings.Contains(ae.ErrorMessage, "limit 2") {
		t.Fatalf("third connection of a key closed with %v", ae)
	}
	// Another key from the same address gets the source's third place, and then none.
	other, err := NewEndpoint(mustUDP(t), Config{Identity: testIdentity(t, 3)})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	c := dial(other)
	if _, err := Call(dctx, c, Message{Header: Header{Type: "x"}}); err != nil {
		t.Fatal(err)
	}
	ae = closedWith(t, dial(other))
	if ae.ErrorCode != CodeConnLimit || !strings.Contains(ae.ErrorMessage, "too many connections from 127.0.0.1") || !strings.Contains(ae.ErrorMessage, "limit 3") {
		t.Fatalf("fourth connection from one address closed with %v", ae)
	}
	if n := limited.Load(); n != 2 {
		t.Fatalf("Refused told of %d connections over a limit, want 2", n)
	}
	// Closing one frees a place for the key.
	a.Close()
	for deadline := time.Now().Add(5 * time.Second); ; {
		c := dial(cli)
		_, err := Call(dctx, c, Message{Header: Header{Type: "x"}})
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no place after a connection closed: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestSourceOf(t *testing.T) {
	for _, tc := range []struct{ addr, want string }{
		{"192.0.2.7:4000", "192.0.2.7"},
		{"[::ffff:192.0.2.7]:4000", "192.0.2.7"},
		{"[2001:db8:1:2:aaaa::1]:4000", "2001:db8:1:2::/64"},
		{"[2001:db8:1:2:bbbb::9]:5000", "2001:db8:1:2::/64"},
		{"[2001:db8:1:3::1]:4000", "2001:db8:1:3::/64"},
	} {
		ua, err := net.ResolveUDPAddr("udp", tc.addr)
		if err != nil {
			t.Fatal(err)
		}
		if got := SourceOf(ua); got != tc.want {
			t.Errorf("SourceOf(%s) = %s, want %s", tc.addr, got, tc.want)
		}
	}
}

// TestReadHeaderLyingLengthAllocation: a prefix announcing the largest header and then a
// stall costs what arrived, not MaxHeaderSize.
func TestReadHeaderLyingLengthAllocation(t *testing.T) {
	frame := append([]byte{'C', 'H', 1}, binary.BigEndian.AppendUint32(nil, MaxHeaderSize)...)
	frame = append(frame, 0x80)
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	_, err := ReadMessage(bytes.NewReader(frame), 0)
	runtime.ReadMemStats(&after)
	if !errors.Is(err, ErrTruncated) {
		t.Fatalf("err = %v, want ErrTruncated", err)
	}
	if allocs := after.TotalAlloc - before.TotalAlloc; allocs > 4*headerStep {
		t.Fatalf("reading a lying header allocated %d bytes, want ≤ %d", allocs, 4*headerStep)
	}
}

// TestConnLimitsOff: negative limits admit any number of connections from one key and source.
func TestConnLimitsOff(t *testing.T) {
	srv, err := ListenAddr("127.0.0.1:0", Config{Identity: testIdentity(t, 1), MaxConnsPerKey: -1, MaxConnsPerSource: -1})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan struct{})
	go func() {
		srv.Serve(ctx, Handler(func(context.Context, NodeID, Message) (Message, error) {
			return Message{Header: Header{Type: "ok"}}, nil
		}))
		close(served)
	}()
	defer func() { cancel(); srv.Close(); <-served }()
	cli, err := NewEndpoint(mustUDP(t), Config{Identity: testIdentity(t, 2)})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	dctx := testCtx(t, 20*time.Second)
	for i := range DefaultMaxConnsPerKey + 4 {
		c, err := cli.Dial(dctx, srv.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := Call(dctx, c, Message{Header: Header{Type: "x"}}); err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
	}
}

// TestMaxServing: an endpoint serves at most MaxServing requests at once over all its
// connections and keys; one more is answered at once with ErrBusy, and served once a place is
// free.
func TestMaxServing(t *testing.T) {
	release := make(chan struct{})
	var busy, waiting atomic.Int32
	srv, err := ListenAddr("127.0.0.1:0", Config{Identity: testIdentity(t, 1), MaxServing: 2,
		Refused: func(_ NodeID, err error) {
			if errors.Is(err, ErrBusy) {
				busy.Add(1)
			}
		}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan struct{})
	go func() {
		srv.Serve(ctx, Handler(func(_ context.Context, _ NodeID, req Message) (Message, error) {
			if req.Type == "wait" {
				waiting.Add(1)
				<-release
			}
			return Message{Header: Header{Type: "ok"}}, nil
		}))
		close(served)
	}()
	defer func() { cancel(); srv.Close(); <-served }()
	dctx := testCtx(t, 20*time.Second)
	dial := func(seed byte) *Conn {
		c, err := Dial(dctx, srv.Addr().String(), Config{Identity: testIdentity(t, seed)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	a, b := dial(2), dial(3)
	errs := make(chan error, 2)
	for _, c := range []*Conn{a, b} {
		go func() {
			_, err := Call(dctx, c, Message{Header: Header{Type: "wait"}})
			errs <- err
		}()
	}
	for deadline := time.Now().Add(10 * time.Second); waiting.Load() < 2; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the two requests were not served")
		}
	}
	start := time.Now()
	_, err = Call(dctx, dial(4), Message{Header: Header{Type: "x", ID: 7}, Payload: make([]byte, 4<<20)})
	var re *RemoteError
	if !errors.As(err, &re) || !strings.Contains(re.Msg, "transport: server busy: 2 requests in progress, limit 2 (MaxServing)") {
		t.Fatalf("a third request: err = %v, want ErrBusy", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("ErrBusy after %v", d)
	}
	if busy.Load() != 1 {
		t.Fatalf("Refused told of %d busy refusals, want 1", busy.Load())
	}
	close(release)
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if _, err := Call(dctx, a, Message{Header: Header{Type: "x"}}); err != nil {
		t.Fatalf("after the others ended: %v", err)
	}
}

// TestBadFramesAreAnswered: a request that is not a valid frame is answered with the frame
// error, naming what was wrong and the limit, rather than dropped without a word.
func TestBadFramesAreAnswered(t *testing.T) {
	var refusals atomic.Int32
	h := Handler(func(_ context.Context, _ NodeID, req Message) (Message, error) {
		return Message{Header: Header{Type: "ok"}}, nil
	})
	cli, _ := servedPair(t, h, Config{Refused: func(NodeID, error) { refusals.Add(1) }}, 2)
	ctx := testCtx(t, 20*time.Second)
	good := frameBytes(t, Header{Type: "x", ID: 5}, []byte("payload"))
	badCRC := append([]byte(nil), good...)
	badCRC[len(badCRC)-1] ^= 1
	tooLarge := append([]byte{'C', 'H', 1}, binary.BigEndian.AppendUint32(nil, MaxHeaderSize+1)...)
	for _, tc := range []struct {
		name  string
		frame []byte
		want  string
	}{
		{"bad magic", []byte("GET / HTTP/1.1\r\n\r\n"), "not a Cohort frame"},
		{"header too large", tooLarge, "frame header too large: 65537 bytes, limit 65536"},
		{"malformed header", append([]byte{'C', 'H', 1, 0, 0, 0, 1}, 0xc1), "malformed frame header"},
		{"checksum", badCRC, "x payload CRC32C"},
		{"trailing data", append(append([]byte(nil), good...), 0), "data after the message"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := rawStream(t, ctx, cli, tc.frame)
			st.Close()
			st.SetDeadline(time.Now().Add(5 * time.Second))
			m, err := ReadMessage(st, 0)
			if err != nil || !strings.Contains(m.Err, tc.want) {
				t.Fatalf("reply %+v, %v; want an error containing %q", m.Header, err, tc.want)
			}
		})
	}
	if n := refusals.Load(); n != 5 {
		t.Fatalf("Refused told of %d bad frames, want 5", n)
	}
	// A stream that ends inside its frame is simply dropped: there is nobody to tell.
	st := rawStream(t, ctx, cli, good[:10])
	st.Close()
	st.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := ReadMessage(st, 0); err == nil {
		t.Fatal("a truncated request got a reply")
	}
}

// TestMaxServingPerSource: one source address gets at most MaxServingPerSource of the
// endpoint's places; another source is served meanwhile.
func TestMaxServingPerSource(t *testing.T) {
	other, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 2)})
	if err != nil {
		t.Skipf("no second loopback address: %v", err)
	}
	release := make(chan struct{})
	var waiting atomic.Int32
	srv, err := ListenAddr("127.0.0.1:0", Config{Identity: testIdentity(t, 1), MaxServing: 10, MaxServingPerSource: 2})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan struct{})
	go func() {
		srv.Serve(ctx, Handler(func(_ context.Context, _ NodeID, req Message) (Message, error) {
			if req.Type == "wait" {
				waiting.Add(1)
				<-release
			}
			return Message{Header: Header{Type: "ok"}}, nil
		}))
		close(served)
	}()
	defer func() { cancel(); srv.Close(); <-served }()
	dctx := testCtx(t, 20*time.Second)
	c, err := Dial(dctx, srv.Addr().String(), Config{Identity: testIdentity(t, 2)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	errs := make(chan error, 2)
	for range 2 {
		go func() {
			_, err := Call(dctx, c, Message{Header: Header{Type: "wait"}})
			errs <- err
		}()
	}
	for deadline := time.Now().Add(10 * time.Second); waiting.Load() < 2; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the two requests were not served")
		}
	}
	_, err = Call(dctx, c, Message{Header: Header{Type: "x"}})
	var re *RemoteError
	if !errors.As(err, &re) || !strings.Contains(re.Msg, "server busy: 2 requests in progress from 127.0.0.1, limit 2 (MaxServingPerSource)") {
		t.Fatalf("a third request from one source: err = %v", err)
	}
	oep, err := NewEndpoint(other, Config{Identity: testIdentity(t, 3)})
	if err != nil {
		t.Fatal(err)
	}
	defer oep.Close()
	oc, err := oep.Dial(dctx, srv.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Call(dctx, oc, Message{Header: Header{Type: "x"}}); err != nil {
		t.Fatalf("a request from another source: %v", err)
	}
	close(release)
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
}
