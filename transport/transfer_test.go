package transport

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cohortlab/cohort/transport/linkshape"
)

func randomBlob(n int, seed uint64) []byte {
	b := make([]byte, n)
	r := rand.NewChaCha8([32]byte{byte(seed)})
	r.Read(b)
	return b
}

func TestManifest(t *testing.T) {
	data := randomBlob(3*DefaultChunkSize+100, 1)
	m, err := NewManifest(data, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Chunks) != 4 || m.ChunkSize != DefaultChunkSize || m.Size != int64(len(data)) {
		t.Fatalf("manifest %d chunks of %d for %d bytes", len(m.Chunks), m.ChunkSize, m.Size)
	}
	if off, end := m.ChunkRange(3); off != 3*DefaultChunkSize || end != int64(len(data)) {
		t.Fatalf("last chunk range [%d, %d)", off, end)
	}
	got, err := UnmarshalManifest(m.MarshalBinary())
	if err != nil {
		t.Fatal(err)
	}
	if got.Root() != m.Root() || !slices.Equal(got.Chunks, m.Chunks) {
		t.Fatal("manifest round trip changed it")
	}
	// The root depends on content and chunking.
	data2 := bytes.Clone(data)
	data2[len(data2)-1] ^= 1
	m2, _ := NewManifest(data2, 0)
	m3, _ := NewManifest(data, 128<<10)
	if m2.Root() == m.Root() || m3.Root() == m.Root() {
		t.Fatal("root does not depend on content and chunk size")
	}
	empty, err := NewManifest(nil, 0)
	if err != nil || len(empty.Chunks) != 0 {
		t.Fatalf("empty blob: %+v, %v", empty, err)
	}
	if _, err := NewManifest(data, 10); !errors.Is(err, ErrManifest) {
		t.Fatalf("tiny chunk size: %v", err)
	}

	enc := m.MarshalBinary()
	badMagic := bytes.Clone(enc)
	badMagic[0] = 'X'
	moreChunks := bytes.Clone(enc)
	moreChunks[19]++ // count says 5 but 4 hashes follow
	sizeLie := bytes.Clone(enc)
	sizeLie[4] = 0x7f // size far larger than 4 chunks cover
	huge := bytes.Clone(enc[:20])
	huge[16], huge[17], huge[18], huge[19] = 0xff, 0xff, 0xff, 0xff
	for name, b := range map[string][]byte{
		"short": enc[:10], "bad-magic": badMagic, "count-mismatch": moreChunks,
		"size-lie": sizeLie, "huge-count": huge, "truncated-hash": enc[:len(enc)-1],
	} {
		if _, err := UnmarshalManifest(b); !errors.Is(err, ErrManifest) {
			t.Errorf("%s: err = %v, want ErrManifest", name, err)
		}
	}
}

func TestAssembly(t *testing.T) {
	data := randomBlob(5*MinChunkSize+3, 2)
	m, _ := NewManifest(data, MinChunkSize)
	if _, err := NewAssembly(m, int64(len(data)-1)); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("size limit: %v", err)
	}
	a, err := NewAssembly(m, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	chunk := func(i int) []byte { off, end := m.ChunkRange(i); return data[off:end] }
	if err := a.Put(1, chunk(2)); !errors.Is(err, ErrChunkHash) {
		t.Fatalf("wrong chunk accepted: %v", err)
	}
	bad := bytes.Clone(chunk(1))
	bad[0] ^= 1
	if err := a.Put(1, bad); !errors.Is(err, ErrChunkHash) {
		t.Fatalf("corrupt chunk accepted: %v", err)
	}
	if err := a.Put(9, chunk(1)); err == nil {
		t.Fatal("out-of-range chunk accepted")
	}
	for _, i := range []int{5, 1, 3} {
		if err := a.Put(i, chunk(i)); err != nil {
			t.Fatal(err)
		}
	}
	if got := a.Missing(); !slices.Equal(got, []int{0, 2, 4}) {
		t.Fatalf("Missing = %v", got)
	}
	if _, err := a.Bytes(); err == nil {
		t.Fatal("incomplete blob returned")
	}
	for _, i := range []int{0, 2, 4, 4} {
		if err := a.Put(i, chunk(i)); err != nil {
			t.Fatal(err)
		}
	}
	got, err := a.Bytes()
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("assembled blob differs: %v", err)
	}
}

func FuzzManifest(f *testing.F) {
	for _, n := range []int{0, 1, MinChunkSize, 3*MinChunkSize + 5} {
		m, err := NewManifest(randomBlob(n, 3), MinChunkSize)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(m.MarshalBinary())
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := UnmarshalManifest(b)
		if err != nil {
			return
		}
		if err := m.Validate(); err != nil {
			t.Fatalf("decoded manifest is invalid: %v", err)
		}
		if !bytes.Equal(m.MarshalBinary(), b) {
			t.Fatal("decode → encode does not reproduce the input")
		}
	})
}

// shapedUDP returns a loopback socket shaped with spec (egress), or a plain one for "".
func shapedUDP(t testing.TB, spec string, seed uint64) (net.PacketConn, *linkshape.Conn) {
	t.Helper()
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	if spec == "" {
		t.Cleanup(func() { pc.Close() })
		return pc, nil
	}
	l, err := linkshape.ParseLink(spec)
	if err != nil {
		t.Fatal(err)
	}
	sc, err := linkshape.Wrap(pc, linkshape.Config{Link: l, Seed: seed})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sc.Close() })
	return sc, sc
}

type xferEnv struct {
	srv, cli       *Endpoint
	srvLink, cliLn *linkshape.Conn
}

// newXferEnv starts a server serving h on a link shaped by spec in both directions
// (each endpoint shapes its egress) and a client endpoint.
func newXferEnv(t testing.TB, spec string, h Router) *xferEnv {
	t.Helper()
	spc, sl := shapedUDP(t, spec, 1)
	cpc, cl := shapedUDP(t, spec, 2)
	srv, err := Listen(spc, Config{Identity: testIdentity(t, 1)})
	if err != nil {
		t.Fatal(err)
	}
	cli, err := NewEndpoint(cpc, Config{Identity: testIdentity(t, 2)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { srv.Serve(ctx, h); close(done) }()
	t.Cleanup(func() {
		cancel()
		cli.Close()
		srv.Close()
		<-done
	})
	return &xferEnv{srv: srv, cli: cli, srvLink: sl, cliLn: cl}
}

func (e *xferEnv) dial(t testing.TB, n int) []*Conn {
	t.Helper()
	ctx := testCtx(t, 10*time.Second)
	conns := make([]*Conn, n)
	for i := range conns {
		c, err := e.cli.Dial(ctx, e.srv.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		conns[i] = c
	}
	return conns
}

func TestFetchOverShapedLink(t *testing.T) {
	store := NewStore(StoreConfig{})
	mux := NewMux()
	store.Register(mux)
	env := newXferEnv(t, "20mbit,10ms,1%", mux)
	data := randomBlob(1<<20+12345, 4)
	m, err := store.Put(data, 64<<10)
	if err != nil {
		t.Fatal(err)
	}
	ctx := testCtx(t, 30*time.Second)
	got, err := Fetch(ctx, env.dial(t, 4), m.Root(), TransferOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data) {
		t.Fatal("fetched blob differs")
	}
	// Again with endgame duplicates on.
	stripes, err := env.cli.DialStripes(ctx, env.srv.Addr().String(), 0)
	if err != nil || len(stripes) != DefaultStripes {
		t.Fatalf("DialStripes: %d conns, %v", len(stripes), err)
	}
	got, err = Fetch(ctx, stripes, m.Root(), TransferOptions{Endgame: true, PerConn: 3})
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("endgame fetch: %v", err)
	}
	if st := env.srvLink.EgressStats(); st.LostPackets == 0 {
		t.Fatalf("the 1%% loss link lost nothing: %+v", st)
	}
	// An unknown root is a clear remote error.
	var re *RemoteError
	if _, err := Fetch(ctx, env.dial(t, 1), Hash{1}, TransferOptions{}); !errors.As(err, &re) {
		t.Fatalf("unknown root: %v", err)
	}
}

func TestFetchResumesAfterBrokenConnections(t *testing.T) {
	store := NewStore(StoreConfig{})
	first, second := testIdentity(t, 2), testIdentity(t, 3) // one identity per attempt
	var (
		mu        sync.Mutex
		requested = map[NodeID][]int{}
		breakConn func()
	)
	mux := NewMux()
	mux.Handle(TypeManifest, store.handleManifest, Limit{})
	mux.Handle(TypeChunk, func(ctx context.Context, peer NodeID, req Message) (Message, error) {
		var ref chunkRef
		if err := req.DecodeBody(&ref); err != nil {
			return Message{}, err
		}
		mu.Lock()
		requested[peer] = append(requested[peer], ref.Index)
		n, brk := len(requested[first.NodeID()]), breakConn
		mu.Unlock()
		if peer == first.NodeID() && n == 6 && brk != nil {
			brk() // the network dies after 6 chunk requests
		}
		return store.handleChunk(ctx, peer, req)
	}, Limit{})
	env := newXferEnv(t, "", mux)
	data := randomBlob(20*MinChunkSize*4, 5)
	m, err := store.Put(data, 4*MinChunkSize)
	if err != nil {
		t.Fatal(err)
	}
	ctx := testCtx(t, 30*time.Second)
	conns := env.dial(t, 2)
	mu.Lock()
	breakConn = func() {
		for _, c := range conns {
			c.CloseWithError(7, "cable cut")
		}
	}
	mu.Unlock()
	a, err := NewAssembly(m, 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Fetch(ctx, conns, TransferOptions{PerConn: 1}); err == nil {
		t.Fatal("fetch over broken connections succeeded")
	}
	missing := a.Missing()
	if len(missing) == 0 || len(missing) == len(m.Chunks) {
		t.Fatalf("after the break %d of %d chunks are missing; want some but not all", len(missing), len(m.Chunks))
	}
	// Resume from a fresh endpoint (a restarted client, with its own identity).
	cli2, err := NewEndpoint(mustUDP(t), Config{Identity: second})
	if err != nil {
		t.Fatal(err)
	}
	defer cli2.Close()
	var conns2 []*Conn
	for range 3 {
		c, err := cli2.Dial(ctx, env.srv.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		conns2 = append(conns2, c)
	}
	if err := a.Fetch(ctx, conns2, TransferOptions{Endgame: true}); err != nil {
		t.Fatal(err)
	}
	got, err := a.Bytes()
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("resumed blob differs: %v", err)
	}
	mu.Lock()
	again := slices.Sorted(slices.Values(requested[second.NodeID()]))
	mu.Unlock()
	// Endgame may ask twice for a chunk of the tail, never more.
	counts := map[int]int{}
	for _, i := range again {
		if counts[i]++; counts[i] > 2 {
			t.Fatalf("chunk %d requested %d times", i, counts[i])
		}
	}
	if uniq := slices.Compact(again); !slices.Equal(uniq, missing) {
		t.Fatalf("resume requested chunks %v, want exactly the missing %v", uniq, missing)
	}
}

func TestPushAndResume(t *testing.T) {
	type pushed struct {
		peer NodeID
		tag  string
		data []byte
	}
	got := make(chan pushed, 4)
	var puts atomic.Int64
	var cancelAfter atomic.Int64
	var cancelPush context.CancelFunc
	store := NewStore(StoreConfig{
		AcceptPush: func(peer NodeID, tag string, m Manifest) error {
			if tag == "forbidden" {
				return errors.New("not this round")
			}
			return nil
		},
		OnPush: func(peer NodeID, tag string, root Hash, data []byte) {
			got <- pushed{peer, tag, data}
		},
	})
	mux := NewMux()
	mux.Handle(TypeOffer, store.handleOffer, Limit{MaxPayload: 1 << 20})
	var putMu sync.Mutex
	putIdx := map[int]bool{}
	mux.Handle(TypePut, func(ctx context.Context, peer NodeID, req Message) (Message, error) {
		var ref putBody
		if err := req.DecodeBody(&ref); err != nil {
			return Message{}, err
		}
		putMu.Lock()
		putIdx[ref.Index] = true
		putMu.Unlock()
		if n := puts.Add(1); n == cancelAfter.Load() && cancelPush != nil {
			cancelPush()
		}
		return store.handlePut(ctx, peer, req)
	}, Limit{Payload: store.putLimit})
	env := newXferEnv(t, "", mux)
	data := randomBlob(40*MinChunkSize, 6)
	m, err := NewManifest(data, 2*MinChunkSize) // 20 chunks
	if err != nil {
		t.Fatal(err)
	}
	conns := env.dial(t, 2)

	// First attempt dies after 5 chunks.
	ctx1, cancel1 := context.WithCancel(testCtx(t, 30*time.Second))
	cancelPush, _ = cancel1, cancelAfter.Swap(5)
	if err := Push(ctx1, conns, "round 1 slice 0", data, m, TransferOptions{PerConn: 1}); !errors.Is(err, context.Canceled) {
		t.Fatalf("interrupted push: err = %v, want context.Canceled", err)
	}
	sentFirst := puts.Load()
	// Second attempt sends only what the receiver lacks.
	puts.Store(0)
	putMu.Lock()
	clear(putIdx)
	putMu.Unlock()
	cancelAfter.Store(-1)
	ctx := testCtx(t, 30*time.Second)
	if err := Push(ctx, conns, "round 1 slice 0", data, m, TransferOptions{}); err != nil {
		t.Fatal(err)
	}
	p := <-got
	if p.peer != testIdentity(t, 2).NodeID() || p.tag != "round 1 slice 0" || !bytes.Equal(p.data, data) {
		t.Fatalf("pushed blob: peer %s tag %q, %d bytes", p.peer, p.tag, len(p.data))
	}
	putMu.Lock()
	sentSecond := int64(len(putIdx))
	putMu.Unlock()
	if sentSecond > int64(len(m.Chunks))-sentFirst+2 || sentSecond >= int64(len(m.Chunks)) {
		// A cancelled put may have been stored after the first count (≤ PerConn × conns in flight).
		t.Fatalf("resumed push sent %d chunks after %d of %d had been sent", sentSecond, sentFirst, len(m.Chunks))
	}
	// Pushing a completed blob again sends nothing and does not deliver it twice.
	puts.Store(0)
	if err := Push(ctx, conns, "round 1 slice 0", data, m, TransferOptions{}); err != nil {
		t.Fatal(err)
	}
	if puts.Load() != 0 {
		t.Fatalf("re-push sent %d chunks", puts.Load())
	}
	select {
	case <-got:
		t.Fatal("blob delivered twice")
	default:
	}
	var re *RemoteError
	if err := Push(ctx, conns, "forbidden", data, m, TransferOptions{}); !errors.As(err, &re) {
		t.Fatalf("refused push: %v", err)
	}
}

// TestQUICOverBothWaysShaping runs QUIC through a shaper that shapes reads as well as
// writes (Direction Both) on the server only; Close must not hang (quic-go unblocks its
// reader with SetReadDeadline).
func TestQUICOverBothWaysShaping(t *testing.T) {
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	sc, err := linkshape.Wrap(pc, linkshape.Config{Link: linkshape.Link{Rate: 20e6, Delay: 10 * time.Millisecond}, Direction: linkshape.Both, Seed: 3})
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	srv, err := Listen(sc, Config{Identity: testIdentity(t, 1)})
	if err != nil {
		t.Fatal(err)
	}
	store := NewStore(StoreConfig{})
	mux := NewMux()
	store.Register(mux)
	ctx := testCtx(t, 20*time.Second)
	served := make(chan struct{})
	go func() { srv.Serve(ctx, mux); close(served) }()
	data := randomBlob(256<<10, 7)
	m, _ := store.Put(data, 0)
	start := time.Now()
	c, err := Dial(ctx, srv.Addr().String(), Config{Identity: testIdentity(t, 2)})
	if err != nil {
		t.Fatal(err)
	}
	// The client's side of the handshake takes one round trip: ≥ 2 × 10 ms.
	if d := time.Since(start); d < 20*time.Millisecond {
		t.Fatalf("handshake took %v, want ≥ 20ms through a 10 ms each-way link", d)
	}
	got, err := Fetch(ctx, []*Conn{c}, m.Root(), TransferOptions{})
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("fetch: %v", err)
	}
	if sc.IngressStats().DeliveredPackets == 0 || sc.EgressStats().DeliveredPackets == 0 {
		t.Fatalf("shaper saw no traffic: in %+v out %+v", sc.IngressStats(), sc.EgressStats())
	}
	c.Close()
	closed := make(chan struct{})
	go func() { srv.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("Endpoint.Close hung on a Direction Both shaper")
	}
	<-served
}

func TestStoreConfigValidate(t *testing.T) {
	for _, cfg := range []StoreConfig{{MaxPushSize: -1}, {MaxPending: -1}} {
		if err := cfg.Validate(); !errors.Is(err, ErrConfig) {
			t.Errorf("%+v: err = %v", cfg, err)
		}
	}
	if err := (&StoreConfig{}).Validate(); err != nil {
		t.Fatal(err)
	}
}

// TestStoreAllow: the Allow hook sees the pulling peer's ID and the root; its error refuses both
// the manifest and the chunks, and reaches the peer.
func TestStoreAllow(t *testing.T) {
	var allowed atomic.Bool
	var asked atomic.Value
	store := NewStore(StoreConfig{Allow: func(peer NodeID, root Hash) error {
		asked.Store(peer)
		if !allowed.Load() {
			return fmt.Errorf("forbidden: %s may not read %s", peer, root)
		}
		return nil
	}})
	mux := NewMux()
	store.Register(mux)
	env := newXferEnv(t, "", mux)
	data := randomBlob(200<<10, 5)
	m, err := store.Put(data, 64<<10)
	if err != nil {
		t.Fatal(err)
	}
	ctx := testCtx(t, 10*time.Second)
	conns := env.dial(t, 1)
	var re *RemoteError
	if _, err := Fetch(ctx, conns, m.Root(), TransferOptions{}); !errors.As(err, &re) || !strings.Contains(re.Msg, "forbidden") {
		t.Fatalf("refused fetch: %v, want a remote forbidden error", err)
	}
	if got := asked.Load(); got != testIdentity(t, 2).NodeID() {
		t.Fatalf("Allow saw peer %v, want the client's ID %s", got, testIdentity(t, 2).NodeID())
	}
	req := Message{Header: Header{Type: TypeChunk}}
	root := m.Root()
	if err := req.SetBody(chunkRef{Root: root[:], Index: 0}); err != nil {
		t.Fatal(err)
	}
	if _, err := Call(ctx, conns[0], req); !errors.As(err, &re) || !strings.Contains(re.Msg, "forbidden") {
		t.Fatalf("refused chunk: %v, want a remote forbidden error", err)
	}
	allowed.Store(true)
	got, err := Fetch(ctx, conns, m.Root(), TransferOptions{})
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("allowed fetch: %v", err)
	}
}
