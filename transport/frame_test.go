package transport

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/cohortlab/cohort/internal/wirecode"
	"github.com/vmihailenco/msgpack/v5"
)

type testBody struct {
	Round int    `msgpack:"round"`
	Codec string `msgpack:"codec"`
}

func frameBytes(t testing.TB, h Header, payload []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := WriteMessage(&buf, h, payload); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestFrameRoundTrip(t *testing.T) {
	big := make([]byte, 3*payloadStep+17) // crosses the incremental-allocation steps
	for i := range big {
		big[i] = byte(i * 7)
	}
	h := Header{Type: "round.upload", ID: 42}
	if err := h.SetBody(testBody{Round: 7, Codec: "topk:0.05+int8"}); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name    string
		h       Header
		payload []byte
	}{
		{"empty", Header{Type: "ping"}, nil},
		{"small", h, []byte("hello")},
		{"large", h, big},
		{"error-reply", Header{Type: "x", ID: 1, Err: "boom"}, nil},
	}
	var stream bytes.Buffer
	for _, tc := range cases {
		data := frameBytes(t, tc.h, tc.payload)
		stream.Write(data)
		got, err := ReadMessage(bytes.NewReader(data), 0)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if got.Type != tc.h.Type || got.ID != tc.h.ID || got.Err != tc.h.Err ||
			!bytes.Equal(got.Body, tc.h.Body) || !bytes.Equal(got.Payload, tc.payload) {
			t.Fatalf("%s: round trip changed the message", tc.name)
		}
	}
	var body testBody
	if err := h.DecodeBody(&body); err != nil || body.Round != 7 || body.Codec != "topk:0.05+int8" {
		t.Fatalf("body round trip: %+v, %v", body, err)
	}
	// Several frames on one stream, then a clean io.EOF.
	r := bytes.NewReader(stream.Bytes())
	for i := range cases {
		if _, err := ReadMessage(r, 0); err != nil {
			t.Fatalf("frame %d of stream: %v", i, err)
		}
	}
	if _, err := ReadMessage(r, 0); err != io.EOF {
		t.Fatalf("after the last frame: err = %v, want io.EOF", err)
	}
}

func TestFrameErrors(t *testing.T) {
	good := frameBytes(t, Header{Type: "t", ID: 1}, []byte("payload bytes"))
	hdrLen := int(binary.BigEndian.Uint32(good[3:7]))
	corruptPayload := append([]byte(nil), good...)
	corruptPayload[len(corruptPayload)-1] ^= 0xff
	badMagic := append([]byte(nil), good...)
	badMagic[0] = 'X'
	badVersion := append([]byte(nil), good...)
	badVersion[2] = 9
	hugeHeader := append([]byte(nil), good[:7]...)
	binary.BigEndian.PutUint32(hugeHeader[3:], MaxHeaderSize+1)
	hugeLen := append([]byte(nil), good[:3]...)
	hugeLen = binary.BigEndian.AppendUint32(hugeLen, 0xffffffff)
	garbageHeader := append([]byte(nil), good[:3]...)
	garbageHeader = binary.BigEndian.AppendUint32(garbageHeader, 3)
	garbageHeader = append(garbageHeader, 0xc1, 0xc1, 0xc1) // 0xc1 is never valid msgpack
	// A header that announces a 1 TiB payload.
	lying, err := msgpack.Marshal(&wireHeader{Type: "t", Len: 1 << 40})
	if err != nil {
		t.Fatal(err)
	}
	lyingFrame := append([]byte{'C', 'H', 1}, binary.BigEndian.AppendUint32(nil, uint32(len(lying)))...)
	lyingFrame = append(lyingFrame, lying...)
	trailing := append([]byte(nil), good[:3]...)
	trailing = binary.BigEndian.AppendUint32(trailing, uint32(hdrLen+1))
	trailing = append(trailing, good[7:7+hdrLen]...)
	trailing = append(trailing, 0x00)

	cases := []struct {
		name string
		data []byte
		max  int64
		want error
	}{
		{"truncated-prefix", good[:4], 0, ErrTruncated},
		{"truncated-header", good[:7+hdrLen/2], 0, ErrTruncated},
		{"truncated-payload", good[:len(good)-3], 0, ErrTruncated},
		{"corrupt-payload", corruptPayload, 0, ErrChecksum},
		{"bad-magic", badMagic, 0, ErrBadMagic},
		{"bad-version", badVersion, 0, ErrBadMagic},
		{"header-too-large", hugeHeader, 0, ErrHeaderTooLarge},
		{"header-len-max-uint32", hugeLen, 0, ErrHeaderTooLarge},
		{"garbage-header", garbageHeader, 0, ErrMalformedHeader},
		{"trailing-header-bytes", trailing, 0, ErrMalformedHeader},
		{"payload-over-cap", good, 5, ErrPayloadTooLarge},
		{"payload-1TiB", lyingFrame, 1 << 50, ErrTruncated}, // allowed by the cap but never sent
		{"payload-1TiB-default-cap", lyingFrame, 0, ErrPayloadTooLarge},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ReadMessage(bytes.NewReader(tc.data), tc.max)
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
		})
	}
	// An oversized header is refused on the writing side too.
	err = WriteMessage(io.Discard, Header{Type: "t", Body: make([]byte, MaxHeaderSize)}, nil)
	if !errors.Is(err, ErrHeaderTooLarge) {
		t.Fatalf("WriteMessage with a huge body: err = %v", err)
	}
}

// TestReadMessageLyingLengthAllocation checks that a frame announcing a huge payload and
// then ending costs memory in proportion to what arrived, not what was announced.
func TestReadMessageLyingLengthAllocation(t *testing.T) {
	lying, err := msgpack.Marshal(&wireHeader{Type: "t", Len: 1 << 36})
	if err != nil {
		t.Fatal(err)
	}
	frame := append([]byte{'C', 'H', 1}, binary.BigEndian.AppendUint32(nil, uint32(len(lying)))...)
	frame = append(frame, lying...)
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	_, err = ReadMessage(bytes.NewReader(frame), 1<<40)
	runtime.ReadMemStats(&after)
	if !errors.Is(err, ErrTruncated) {
		t.Fatalf("err = %v, want ErrTruncated", err)
	}
	if allocs := after.TotalAlloc - before.TotalAlloc; allocs > 2*payloadStep {
		t.Fatalf("reading a lying frame allocated %d bytes, want ≤ %d", allocs, 2*payloadStep)
	}
}

func FuzzReadMessage(f *testing.F) {
	h := Header{Type: "round.upload", ID: 9}
	if err := h.SetBody(testBody{Round: 1, Codec: "q8"}); err != nil {
		f.Fatal(err)
	}
	f.Add(frameBytes(f, h, []byte("payload")))
	f.Add(frameBytes(f, Header{Type: "ping"}, nil))
	f.Add(frameBytes(f, Header{Type: "e", ID: 3, Err: "boom"}, make([]byte, 100)))
	f.Add([]byte("CH\x01\x00\x00\x00\x01\xc0"))
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := ReadMessage(bytes.NewReader(data), 1<<20)
		if err != nil {
			return
		}
		// Whatever decodes re-encodes and decodes to the same message.
		again, err := ReadMessage(bytes.NewReader(frameBytes(t, m.Header, m.Payload)), 1<<20)
		if err != nil {
			t.Fatalf("re-encoded frame does not decode: %v", err)
		}
		if again.Type != m.Type || again.ID != m.ID || again.Err != m.Err ||
			!bytes.Equal(again.Body, m.Body) || !bytes.Equal(again.Payload, m.Payload) {
			t.Fatal("re-encoded frame decodes differently")
		}
	})
}

// rpcPair returns a client connection to a server endpoint serving h.
func rpcPair(t *testing.T, h Router, cfg Config) *Conn {
	t.Helper()
	srvCfg := cfg
	srvCfg.Identity = testIdentity(t, 1)
	srv, err := ListenAddr("127.0.0.1:0", srvCfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { srv.Serve(ctx, h); close(done) }()
	cliCfg := cfg
	cliCfg.Identity = testIdentity(t, 2)
	c, err := Dial(testCtx(t, 10*time.Second), srv.Addr().String(), cliCfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c.Close()
		cancel()
		srv.Close()
		<-done
	})
	return c
}

func TestCallServe(t *testing.T) {
	client := testIdentity(t, 2).NodeID()
	mux := NewMux()
	mux.Handle("echo", func(ctx context.Context, peer NodeID, req Message) (Message, error) {
		if peer != client {
			return Message{}, fmt.Errorf("peer %s, want %s", peer, client)
		}
		return Message{Header: Header{Type: "echo.reply", Body: req.Body}, Payload: req.Payload}, nil
	}, Limit{MaxPayload: 1 << 30})
	mux.Handle("fail", func(context.Context, NodeID, Message) (Message, error) {
		return Message{}, errors.New("no such round")
	}, Limit{})
	mux.Handle("slow", func(ctx context.Context, _ NodeID, _ Message) (Message, error) {
		<-ctx.Done()
		return Message{}, ctx.Err()
	}, Limit{})
	c := rpcPair(t, mux, Config{MaxPayload: 1 << 20})
	ctx := testCtx(t, 10*time.Second)

	payload := bytes.Repeat([]byte("abc"), 100000)
	req := Message{Header: Header{Type: "echo", ID: 77, Body: []byte{0x01}}, Payload: payload}
	reply, err := Call(ctx, c, req)
	if err != nil {
		t.Fatal(err)
	}
	if reply.ID != 77 || reply.Type != "echo.reply" || !bytes.Equal(reply.Payload, payload) || !bytes.Equal(reply.Body, []byte{1}) {
		t.Fatalf("bad echo reply id=%d type=%q len=%d", reply.ID, reply.Type, len(reply.Payload))
	}

	_, err = Call(ctx, c, Message{Header: Header{Type: "fail", ID: 1}})
	var re *RemoteError
	if !errors.As(err, &re) || re.Msg != "no such round" || re.Type != "fail" {
		t.Fatalf("handler error: got %v", err)
	}
	_, err = Call(ctx, c, Message{Header: Header{Type: "nope", ID: 2}})
	if !errors.As(err, &re) || !strings.Contains(re.Msg, "no handler") {
		t.Fatalf("unknown type: got %v", err)
	}
	// The server refuses a request above its MaxPayload; the call fails instead of hanging.
	_, err = Call(ctx, c, Message{Header: Header{Type: "echo", ID: 3}, Payload: make([]byte, 2<<20)})
	if err == nil {
		t.Fatal("oversized request succeeded")
	}
	// A cancelled call returns promptly with the context's error.
	cctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	_, err = Call(cctx, c, Message{Header: Header{Type: "slow", ID: 4}})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("cancelled call: err = %v, want DeadlineExceeded", err)
	}
	// The connection still works afterwards.
	if _, err := Call(ctx, c, Message{Header: Header{Type: "echo", ID: 5}}); err != nil {
		t.Fatal(err)
	}
}

func TestMuxDuplicatePanics(t *testing.T) {
	m := NewMux()
	h := func(context.Context, NodeID, Message) (Message, error) { return Message{}, nil }
	m.Handle("a", h, Limit{})
	defer func() {
		if r := recover(); r == nil || !strings.Contains(fmt.Sprint(r), "duplicate handler for type a") {
			t.Fatalf("recover() = %v", r)
		}
	}()
	m.Handle("a", h, Limit{})
}

// TestManyCallsReleaseStreams checks that finished request streams give their credit
// back: with a server limit of 4 concurrent streams, 60 sequential calls must all pass.
func TestManyCallsReleaseStreams(t *testing.T) {
	h := func(_ context.Context, _ NodeID, req Message) (Message, error) {
		return Message{Header: Header{Type: "ok"}, Payload: req.Payload}, nil
	}
	c := rpcPair(t, Handler(h), Config{MaxIncomingStreams: 4})
	ctx := testCtx(t, 20*time.Second)
	for i := range 60 {
		if _, err := Call(ctx, c, Message{Header: Header{Type: "x", ID: uint64(i)}, Payload: make([]byte, i*100)}); err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
	}
}

// TestServerInitiatedCall: connections are symmetric once up; a peer that serves its
// dialled connection can be called by the node it dialled (e.g. an aggregator sending
// the aggregated slice back).
func TestServerInitiatedCall(t *testing.T) {
	srvID, cliID := testIdentity(t, 1), testIdentity(t, 2)
	srv := testServer(t, srvID, nil)
	ctx := testCtx(t, 10*time.Second)
	accepted := make(chan *Conn, 1)
	go func() {
		c, err := srv.Accept(ctx)
		if err == nil {
			accepted <- c
		}
	}()
	cli, err := Dial(ctx, srv.Addr().String(), Config{Identity: cliID})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	go Serve(ctx, cli, Handler(func(_ context.Context, peer NodeID, req Message) (Message, error) {
		if peer != srvID.NodeID() {
			return Message{}, fmt.Errorf("called by %s", peer)
		}
		return Message{Header: Header{Type: "aggregate.ok"}, Payload: []byte{byte(len(req.Payload))}}, nil
	}))
	sc := <-accepted
	reply, err := Call(ctx, sc, Message{Header: Header{Type: "aggregate", ID: 9}, Payload: make([]byte, 42)})
	if err != nil {
		t.Fatal(err)
	}
	if reply.Type != "aggregate.ok" || len(reply.Payload) != 1 || reply.Payload[0] != 42 {
		t.Fatalf("reply %q %v", reply.Type, reply.Payload)
	}
}

func BenchmarkFrameRoundTrip(b *testing.B) {
	for _, n := range []int{1 << 10, 64 << 10, 1 << 20} {
		b.Run(fmt.Sprintf("payload=%d", n), func(b *testing.B) {
			payload := make([]byte, n)
			h := Header{Type: "round.upload", ID: 1}
			if err := h.SetBody(testBody{Round: 3, Codec: "topk:0.05+int8"}); err != nil {
				b.Fatal(err)
			}
			var buf bytes.Buffer
			b.SetBytes(int64(n))
			b.ReportAllocs()
			for b.Loop() {
				buf.Reset()
				if err := WriteMessage(&buf, h, payload); err != nil {
					b.Fatal(err)
				}
				if _, err := ReadMessage(&buf, 0); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestErrorCodesCrossTheWire: a handler's sentinel reaches the caller as a code beside the text,
// and errors.Is matches it there — on the RemoteError and on its Reason — while the text alone
// classifies nothing.
func TestErrorCodesCrossTheWire(t *testing.T) {
	errLate := wirecode.New(131, "late")
	errOther := wirecode.New(129, "already sent")
	mux := NewMux()
	mux.Handle("late", func(context.Context, NodeID, Message) (Message, error) {
		return Message{}, fmt.Errorf("upload: slice 2 closed at its deadline: %w", errLate)
	}, Limit{})
	mux.Handle("plain", func(context.Context, NodeID, Message) (Message, error) {
		return Message{}, errors.New("upload: late") // the same word, no code
	}, Limit{})
	c := rpcPair(t, mux, Config{})
	ctx := testCtx(t, 10*time.Second)

	_, err := Call(ctx, c, Message{Header: Header{Type: "late", ID: 1}})
	var re *RemoteError
	if !errors.As(err, &re) || re.Code != 131 {
		t.Fatalf("got %v, want a RemoteError of code 131", err)
	}
	if !errors.Is(err, errLate) || errors.Is(err, errOther) {
		t.Errorf("errors.Is on the remote error: late %v, other %v", errors.Is(err, errLate), errors.Is(err, errOther))
	}
	reason := re.Reason()
	if reason.Error() != "upload: slice 2 closed at its deadline: late" || !errors.Is(reason, errLate) {
		t.Errorf("reason %q does not keep the text or the code", reason)
	}
	// A handler that forwards a RemoteError passes its code on.
	if wirecode.Of(fmt.Errorf("forwarded: %w", re)) != 131 || wirecode.Of(reason) != 131 {
		t.Error("a forwarded remote error loses its code")
	}

	_, err = Call(ctx, c, Message{Header: Header{Type: "plain", ID: 2}})
	if !errors.As(err, &re) || re.Code != 0 || errors.Is(err, errLate) {
		t.Errorf("an uncoded error: %v (code %d) matches a sentinel", err, re.Code)
	}
	// The transport's own refusals carry codes too.
	_, err = Call(ctx, c, Message{Header: Header{Type: "nope", ID: 3}})
	if !errors.Is(err, ErrUnknownType) {
		t.Errorf("unknown type: %v does not match ErrUnknownType", err)
	}
}

// fixedHeader is the frame header as msgpack's default encoder wrote it before integers were
// written compact: every frame of that form must still be read.
type fixedHeader struct {
	Type string `msgpack:"t"`
	ID   uint64 `msgpack:"i"`
	Len  uint64 `msgpack:"n"`
	CRC  uint32 `msgpack:"c"`
	Body []byte `msgpack:"b,omitempty"`
}

// TestFrameGolden: a frame's bytes (integers in the fewest bytes that hold them), and a frame
// whose header has fixed-width integers, as written before, read as the same message.
func TestFrameGolden(t *testing.T) {
	payload := []byte("ab")
	h := Header{Type: "t", ID: 5, Body: []byte{0x90}}
	got := frameBytes(t, h, payload)
	// "CH" 1 | length 23 | {t: "t", i: 5, n: 2, c: CRC32C("ab"), b: bin[0x90]} | "ab"
	const want = "434801" + "00000017" + "85a174a174a16905a16e02a163ce" + "e2a22936" + "a162c40190" + "6162"
	if hex.EncodeToString(got) != want {
		t.Fatalf("frame % x,\nwant %s", got, want)
	}
	old, err := msgpack.Marshal(&fixedHeader{Type: "t", ID: 5, Len: 2, CRC: crc32.Checksum(payload, castagnoli), Body: []byte{0x90}})
	if err != nil {
		t.Fatal(err)
	}
	frame := append([]byte{'C', 'H', 1}, binary.BigEndian.AppendUint32(nil, uint32(len(old)))...)
	frame = append(append(frame, old...), payload...)
	if len(frame) <= len(got) {
		t.Fatalf("the fixed-width frame is %d bytes, the compact one %d", len(frame), len(got))
	}
	m, err := ReadMessage(bytes.NewReader(frame), 0)
	if err != nil {
		t.Fatal(err)
	}
	if m.Type != "t" || m.ID != 5 || !bytes.Equal(m.Body, []byte{0x90}) || !bytes.Equal(m.Payload, payload) {
		t.Fatalf("read %+v", m)
	}
}
