package transport

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/cohortlab/cohort/internal/wirecode"
)

// Message types of the chunked transfer protocol (served by Store.Register).
const (
	TypeManifest = "xfer.manifest" // body {r: root}; reply payload: the encoded manifest
	TypeChunk    = "xfer.chunk"    // body {r: root, i: index}; reply payload: the chunk
	TypeOffer    = "xfer.offer"    // body {tag}; payload: manifest; reply payload: bitmap of chunks held
	TypePut      = "xfer.put"      // body {r: root, i: index}; payload: the chunk
)

// ErrNotFound is returned (as a RemoteError text) for a blob the Store does not hold.
var ErrNotFound error = wirecode.New(4, "transport: blob not found")

type chunkRef struct {
	Root  []byte `msgpack:"r"`
	Index int    `msgpack:"i"`
}

type offerBody struct {
	Tag string `msgpack:"tag"`
}

func (r chunkRef) root() (Hash, error) {
	var h Hash
	if len(r.Root) != len(h) {
		return h, fmt.Errorf("%w: root of %d bytes", ErrMalformedHeader, len(r.Root))
	}
	copy(h[:], r.Root)
	return h, nil
}

// StoreConfig configures a Store. The zero value serves pulls and refuses nothing.
type StoreConfig struct {
	// MaxPushSize caps a blob a peer may push. Zero means 1 GiB.
	MaxPushSize int64
	// MaxPending caps the incomplete pushes held at once (each holds its whole blob in
	// memory). Zero means 64.
	MaxPending int
	// AcceptPush decides whether peer may push the blob m under tag (e.g. "round 7 slice
	// 2"); a non-nil error refuses it. Nil accepts every push.
	AcceptPush func(peer NodeID, tag string, m Manifest) error
	// OnPush is called once for each completed push with the verified blob. It must not
	// block for long: it runs on the request that delivered the last chunk.
	OnPush func(peer NodeID, tag string, root Hash, data []byte)
	// Allow, if set, decides whether peer may pull the blob root (its manifest and chunks); a
	// non-nil error refuses the request with that error. Nil serves every blob to every peer.
	Allow func(peer NodeID, root Hash) error
	// PullOnly serves pulls only: Register leaves the push types out, so offers and puts
	// are refused as unknown types from their header, their payload unread.
	PullOnly bool
}

// Store serves blobs to pulling peers (Put, then the peer calls Fetch) and assembles
// blobs pushed by peers (Push on their side; StoreConfig.OnPush here).
type Store struct {
	cfg StoreConfig

	mu      sync.Mutex
	blobs   map[Hash]storedBlob
	pending map[pushKey]*pendingPush
	done    map[pushKey]bool // recently completed pushes, so a re-offer is not re-sent
	doneFIF []pushKey
}

type storedBlob struct {
	m    Manifest
	enc  []byte
	data []byte
}

type pushKey struct {
	peer NodeID
	root Hash
	tag  string
}

type pendingPush struct {
	asm      *Assembly
	finished atomic.Bool
}

const maxDoneMemory = 1024

// Validate reports a negative limit.
func (c *StoreConfig) Validate() error {
	if c.MaxPushSize < 0 {
		return fmt.Errorf("%w: MaxPushSize %d is negative", ErrConfig, c.MaxPushSize)
	}
	if c.MaxPending < 0 {
		return fmt.Errorf("%w: MaxPending %d is negative", ErrConfig, c.MaxPending)
	}
	return nil
}

// NewStore returns an empty Store. Negative limits in cfg (see Validate) count as zero.
func NewStore(cfg StoreConfig) *Store {
	cfg.MaxPushSize = max(cfg.MaxPushSize, 0)
	cfg.MaxPending = max(cfg.MaxPending, 0)
	if cfg.MaxPushSize == 0 {
		cfg.MaxPushSize = 1 << 30
	}
	if cfg.MaxPending == 0 {
		cfg.MaxPending = 64
	}
	return &Store{cfg: cfg, blobs: make(map[Hash]storedBlob), pending: make(map[pushKey]*pendingPush), done: make(map[pushKey]bool)}
}

// Put makes data available to Fetch under the returned manifest's Root (chunkSize 0
// means DefaultChunkSize). The Store keeps a reference to data: do not modify it.
func (s *Store) Put(data []byte, chunkSize int) (Manifest, error) {
	m, err := NewManifest(data, chunkSize)
	if err != nil {
		return Manifest{}, err
	}
	s.mu.Lock()
	s.blobs[m.Root()] = storedBlob{m: m, enc: m.MarshalBinary(), data: data}
	s.mu.Unlock()
	return m, nil
}

// Remove stops serving root.
func (s *Store) Remove(root Hash) {
	s.mu.Lock()
	delete(s.blobs, root)
	s.mu.Unlock()
}

// Register adds the transfer message types to mux. Pull requests carry no payload; an offer
// carries at most the manifest of a MaxPushSize blob, and a put exactly the size of the chunk
// it names in a push this peer offered (anything else is refused before its payload is read).
func (s *Store) Register(mux *Mux) {
	mux.Handle(TypeManifest, s.handleManifest, Limit{})
	mux.Handle(TypeChunk, s.handleChunk, Limit{})
	if s.cfg.PullOnly {
		return
	}
	mux.Handle(TypeOffer, s.handleOffer, Limit{MaxPayload: maxManifestLen(s.cfg.MaxPushSize)})
	mux.Handle(TypePut, s.handlePut, Limit{Payload: s.putLimit})
}

// maxManifestLen is the encoded size of the largest manifest of a blob of up to size bytes.
func maxManifestLen(size int64) int64 {
	chunks := min((size+MinChunkSize-1)/MinChunkSize, MaxManifestChunks)
	return manifestHeaderLen + 32*chunks
}

// putLimit is the size of the chunk a put names, in a push its sender offered.
func (s *Store) putLimit(_ context.Context, peer NodeID, h Header) (int64, error) {
	var body putBody
	if err := h.DecodeBody(&body); err != nil {
		return 0, err
	}
	root, err := body.root()
	if err != nil {
		return 0, err
	}
	key := pushKey{peer: peer, root: root, tag: body.Tag}
	s.mu.Lock()
	p, done := s.pending[key], s.done[key]
	s.mu.Unlock()
	var m Manifest
	switch {
	case p != nil:
		m = p.asm.Manifest()
	case done:
		return MaxChunkSize, nil // a late duplicate of a finished push: answered, not stored
	default:
		return 0, fmt.Errorf("%w: no offer for %s from %s", ErrNotFound, root, peer)
	}
	if body.Index < 0 || body.Index >= len(m.Chunks) {
		return 0, fmt.Errorf("transport: chunk %d out of range [0, %d)", body.Index, len(m.Chunks))
	}
	off, end := m.ChunkRange(body.Index)
	return end - off, nil
}

func (s *Store) lookup(peer NodeID, req Message) (storedBlob, int, error) {
	var ref chunkRef
	if err := req.DecodeBody(&ref); err != nil {
		return storedBlob{}, 0, err
	}
	root, err := ref.root()
	if err != nil {
		return storedBlob{}, 0, err
	}
	if s.cfg.Allow != nil {
		if err := s.cfg.Allow(peer, root); err != nil {
			return storedBlob{}, 0, err
		}
	}
	s.mu.Lock()
	b, ok := s.blobs[root]
	s.mu.Unlock()
	if !ok {
		return storedBlob{}, 0, fmt.Errorf("%w: %s", ErrNotFound, root)
	}
	return b, ref.Index, nil
}

func (s *Store) handleManifest(_ context.Context, peer NodeID, req Message) (Message, error) {
	b, _, err := s.lookup(peer, req)
	if err != nil {
		return Message{}, err
	}
	return Message{Header: Header{Type: TypeManifest}, Payload: b.enc}, nil
}

func (s *Store) handleChunk(_ context.Context, peer NodeID, req Message) (Message, error) {
	b, i, err := s.lookup(peer, req)
	if err != nil {
		return Message{}, err
	}
	if i < 0 || i >= len(b.m.Chunks) {
		return Message{}, fmt.Errorf("transport: chunk %d out of range [0, %d)", i, len(b.m.Chunks))
	}
	off, end := b.m.ChunkRange(i)
	return Message{Header: Header{Type: TypeChunk}, Payload: b.data[off:end]}, nil
}

func (s *Store) handleOffer(_ context.Context, peer NodeID, req Message) (Message, error) {
	var body offerBody
	if err := req.DecodeBody(&body); err != nil {
		return Message{}, err
	}
	m, err := UnmarshalManifest(req.Payload)
	if err != nil {
		return Message{}, err
	}
	key := pushKey{peer: peer, root: m.Root(), tag: body.Tag}
	bitmap := make([]byte, (len(m.Chunks)+7)/8)
	s.mu.Lock()
	if s.done[key] {
		s.mu.Unlock()
		for i := range m.Chunks {
			bitmap[i/8] |= 1 << (i % 8)
		}
		return Message{Header: Header{Type: TypeOffer}, Payload: bitmap}, nil
	}
	p := s.pending[key]
	s.mu.Unlock()
	if p == nil {
		if s.cfg.AcceptPush != nil {
			if err := s.cfg.AcceptPush(peer, body.Tag, m); err != nil {
				return Message{}, fmt.Errorf("push refused: %w", err)
			}
		}
		asm, err := NewAssembly(m, s.cfg.MaxPushSize)
		if err != nil {
			return Message{}, err
		}
		s.mu.Lock()
		if p = s.pending[key]; p == nil {
			if len(s.pending) >= s.cfg.MaxPending {
				s.mu.Unlock()
				return Message{}, fmt.Errorf("push refused: %d pushes pending", len(s.pending))
			}
			p = &pendingPush{asm: asm}
			s.pending[key] = p
		}
		s.mu.Unlock()
	}
	for i := range m.Chunks {
		if p.asm.Has(i) {
			bitmap[i/8] |= 1 << (i % 8)
		}
	}
	return Message{Header: Header{Type: TypeOffer}, Payload: bitmap}, nil
}

type putBody struct {
	chunkRef
	Tag string `msgpack:"tag"`
}

func (s *Store) handlePut(_ context.Context, peer NodeID, req Message) (Message, error) {
	var body putBody
	if err := req.DecodeBody(&body); err != nil {
		return Message{}, err
	}
	root, err := body.root()
	if err != nil {
		return Message{}, err
	}
	key := pushKey{peer: peer, root: root, tag: body.Tag}
	s.mu.Lock()
	p := s.pending[key]
	done := s.done[key]
	s.mu.Unlock()
	if done {
		return Message{Header: Header{Type: TypePut}}, nil
	}
	if p == nil {
		return Message{}, fmt.Errorf("%w: no offer for %s from %s", ErrNotFound, root, peer)
	}
	if err := p.asm.Put(body.Index, req.Payload); err != nil {
		return Message{}, err
	}
	if p.asm.Complete() && p.finished.CompareAndSwap(false, true) {
		data, _ := p.asm.Bytes()
		s.mu.Lock()
		delete(s.pending, key)
		s.done[key] = true
		s.doneFIF = append(s.doneFIF, key)
		if len(s.doneFIF) > maxDoneMemory {
			delete(s.done, s.doneFIF[0])
			s.doneFIF = s.doneFIF[1:]
		}
		s.mu.Unlock()
		if s.cfg.OnPush != nil {
			s.cfg.OnPush(peer, body.Tag, root, data)
		}
	}
	return Message{Header: Header{Type: TypePut}}, nil
}

// TransferOptions tune Fetch and Push. The zero value is the default.
type TransferOptions struct {
	// PerConn is the number of chunk requests in flight on each connection. Zero means 2:
	// one chunk is in transit while the next request travels, so a stripe never idles
	// for a round trip between chunks.
	PerConn int
	// MaxSize caps the blob Fetch accepts. Zero means 1 GiB.
	MaxSize int64
	// Endgame re-requests the last chunks in flight on idle connections (see stripe).
	// Off by default: over a 10 Mbit/s, 100 ms, 1 % loss link it did not shorten
	// transfers with 64 KiB chunks and cost 5–15 % more bytes on the wire; it helps when
	// a connection stalls outright.
	Endgame bool
}

func (o TransferOptions) withDefaults() TransferOptions {
	if o.PerConn <= 0 {
		o.PerConn = 2
	}
	if o.MaxSize <= 0 {
		o.MaxSize = 1 << 30
	}
	return o
}

// FetchManifest asks c's peer for the manifest of root and checks it hashes to root.
func FetchManifest(ctx context.Context, c *Conn, root Hash) (Manifest, error) {
	req := Message{Header: Header{Type: TypeManifest}}
	if err := req.SetBody(chunkRef{Root: root[:]}); err != nil {
		return Manifest{}, err
	}
	reply, err := Call(ctx, c, req)
	if err != nil {
		return Manifest{}, err
	}
	m, err := UnmarshalManifest(reply.Payload)
	if err != nil {
		return Manifest{}, err
	}
	if got := m.Root(); got != root {
		return Manifest{}, fmt.Errorf("%w: manifest from %s hashes to %s, want %s", ErrManifest, c.Peer(), got, root)
	}
	return m, nil
}

// Fetch downloads the blob root from the peers behind conns (usually several
// connections to one node, to stripe over them) and returns it verified.
func Fetch(ctx context.Context, conns []*Conn, root Hash, opt TransferOptions) ([]byte, error) {
	if len(conns) == 0 {
		return nil, errors.New("transport: Fetch needs at least one connection")
	}
	opt = opt.withDefaults()
	m, err := FetchManifest(ctx, conns[0], root)
	if err != nil {
		return nil, err
	}
	a, err := NewAssembly(m, opt.MaxSize)
	if err != nil {
		return nil, err
	}
	if err := a.Fetch(ctx, conns, opt); err != nil {
		return nil, err
	}
	return a.Bytes()
}

// Fetch downloads the chunks a is missing, striped over conns. On error the chunks
// received so far stay in a: call Fetch again (e.g. on new connections) to resume.
func (a *Assembly) Fetch(ctx context.Context, conns []*Conn, opt TransferOptions) error {
	opt = opt.withDefaults()
	root := a.Root()
	return stripe(ctx, conns, a.Missing(), opt.PerConn, opt.Endgame, func(ctx context.Context, c *Conn, i int) error {
		req := Message{Header: Header{Type: TypeChunk, ID: uint64(i)}}
		if err := req.SetBody(chunkRef{Root: root[:], Index: i}); err != nil {
			return err
		}
		reply, err := Call(ctx, c, req)
		if err != nil {
			return err
		}
		return a.Put(i, reply.Payload)
	})
}

// Push sends data (described by m, from NewManifest) to the peer behind conns under tag,
// striped over conns. The receiver reports the chunks it already holds, so calling Push
// again after a failure sends only the rest.
func Push(ctx context.Context, conns []*Conn, tag string, data []byte, m Manifest, opt TransferOptions) error {
	if len(conns) == 0 {
		return errors.New("transport: Push needs at least one connection")
	}
	if err := m.Validate(); err != nil {
		return err
	}
	if int64(len(data)) != m.Size {
		return fmt.Errorf("%w: %d bytes of data for a manifest of %d", ErrManifest, len(data), m.Size)
	}
	opt = opt.withDefaults()
	offer := Message{Header: Header{Type: TypeOffer}, Payload: m.MarshalBinary()}
	if err := offer.SetBody(offerBody{Tag: tag}); err != nil {
		return err
	}
	var reply Message
	var err error
	for _, c := range conns { // any live connection will do for the offer
		if reply, err = Call(ctx, c, offer); err == nil {
			break
		}
	}
	if err != nil {
		return err
	}
	if len(reply.Payload) != (len(m.Chunks)+7)/8 {
		return fmt.Errorf("%w: offer reply bitmap of %d bytes for %d chunks", ErrMalformedHeader, len(reply.Payload), len(m.Chunks))
	}
	var todo []int
	for i := range m.Chunks {
		if reply.Payload[i/8]&(1<<(i%8)) == 0 {
			todo = append(todo, i)
		}
	}
	root := m.Root()
	return stripe(ctx, conns, todo, opt.PerConn, opt.Endgame, func(ctx context.Context, c *Conn, i int) error {
		off, end := m.ChunkRange(i)
		req := Message{Header: Header{Type: TypePut, ID: uint64(i)}, Payload: data[off:end]}
		if err := req.SetBody(putBody{chunkRef: chunkRef{Root: root[:], Index: i}, Tag: tag}); err != nil {
			return err
		}
		_, err := Call(ctx, c, req)
		return err
	})
}

// stripe runs do for every index in todo, perConn at a time on each connection. A
// connection whose request fails stops taking work (the index goes back to the queue for
// the others); stripe fails only when no connection is left or ctx ends.
//
// Endgame: once the queue is empty, an idle worker re-requests the oldest chunk still in
// flight on another connection (at most one extra copy per chunk); the first copy to
// arrive wins and the other is cancelled. Without it the transfer's tail waits on the
// slowest stripe (one that just halved its congestion window after a loss).
func stripe(ctx context.Context, conns []*Conn, todo []int, perConn int, endgame bool, do func(context.Context, *Conn, int) error) error {
	if len(todo) == 0 {
		return nil
	}
	if len(conns) == 0 {
		return errors.New("transport: no connections to transfer over")
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	s := &scheduler{queue: append([]int(nil), todo...), remaining: len(todo),
		inflight: make(map[int]*flight), changed: make(chan struct{}), endgame: endgame}
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr error
	)
	for _, c := range conns {
		for range perConn {
			wg.Go(func() {
				for {
					i, rctx, rcancel, ok := s.next(ctx, c)
					if !ok {
						return
					}
					err := do(rctx, c, i)
					superseded := rctx.Err() != nil && ctx.Err() == nil
					rcancel()
					if s.finish(i, c, err == nil) == 0 {
						cancel()
						return
					}
					if err != nil && !superseded {
						mu.Lock()
						if firstErr == nil && ctx.Err() == nil {
							firstErr = err
						}
						mu.Unlock()
						return // this connection is failing: leave the work to the others
					}
				}
			})
		}
	}
	wg.Wait()
	s.mu.Lock()
	left := s.remaining
	s.mu.Unlock()
	if left == 0 {
		return nil
	}
	if err := context.Cause(ctx); err != nil && firstErr == nil {
		firstErr = err
	}
	return fmt.Errorf("transport: transfer stopped with %d of %d chunks left: %w", left, len(todo), firstErr)
}

type flight struct {
	copies  map[*Conn]context.CancelFunc
	started int // order of first start, for picking the oldest in endgame
}

type scheduler struct {
	mu        sync.Mutex
	queue     []int
	inflight  map[int]*flight
	remaining int
	starts    int
	changed   chan struct{} // closed and replaced on every finish
	endgame   bool
}

// next hands out the next index for connection c, blocking while there is nothing to do.
func (s *scheduler) next(ctx context.Context, c *Conn) (int, context.Context, context.CancelFunc, bool) {
	for {
		s.mu.Lock()
		if s.remaining == 0 || ctx.Err() != nil {
			s.mu.Unlock()
			return 0, nil, nil, false
		}
		if len(s.queue) > 0 {
			i := s.queue[0]
			s.queue = s.queue[1:]
			rctx, rcancel := context.WithCancel(ctx)
			s.starts++
			s.inflight[i] = &flight{copies: map[*Conn]context.CancelFunc{c: rcancel}, started: s.starts}
			s.mu.Unlock()
			return i, rctx, rcancel, true
		}
		if s.endgame {
			best, bestStart := -1, 0
			for i, f := range s.inflight {
				if _, mine := f.copies[c]; mine || len(f.copies) >= 2 {
					continue
				}
				if best < 0 || f.started < bestStart {
					best, bestStart = i, f.started
				}
			}
			if best >= 0 {
				rctx, rcancel := context.WithCancel(ctx)
				s.inflight[best].copies[c] = rcancel
				s.mu.Unlock()
				return best, rctx, rcancel, true
			}
		}
		changed := s.changed
		s.mu.Unlock()
		select {
		case <-ctx.Done():
		case <-changed:
		}
	}
}

// finish records the end of c's copy of i and returns how many indices remain.
func (s *scheduler) finish(i int, c *Conn, ok bool) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	defer func() {
		close(s.changed)
		s.changed = make(chan struct{})
	}()
	f := s.inflight[i]
	if f == nil { // another copy already delivered it
		return s.remaining
	}
	delete(f.copies, c)
	if ok {
		for _, cancel := range f.copies {
			cancel() // the other copy is no longer needed
		}
		delete(s.inflight, i)
		s.remaining--
		return s.remaining
	}
	if len(f.copies) == 0 {
		delete(s.inflight, i)
		s.queue = append([]int{i}, s.queue...) // retry it first
	}
	return s.remaining
}
