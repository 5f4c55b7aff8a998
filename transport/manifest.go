package transport

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
)

// Chunking limits.
const (
	DefaultChunkSize = 64 << 10 // 64 KiB; see the package doc for why
	MinChunkSize     = 1 << 10
	MaxChunkSize     = 16 << 20
	// MaxManifestChunks caps the number of chunks in a manifest (32 MiB of hashes).
	MaxManifestChunks = 1 << 20
)

// ErrManifest is wrapped by every manifest decoding or validation error.
var ErrManifest = errors.New("transport: bad manifest")

// ErrChunkHash is returned when a chunk's bytes do not match its manifest hash.
var ErrChunkHash = errors.New("transport: chunk hash mismatch")

// Hash is a SHA-256 digest.
type Hash [32]byte

// String is the hex form.
func (h Hash) String() string { return hex.EncodeToString(h[:]) }

// Manifest describes a blob cut into fixed-size chunks (the last one may be shorter),
// each named by its SHA-256. Its Root names the whole blob.
type Manifest struct {
	Size      int64
	ChunkSize int
	Chunks    []Hash
}

// NewManifest chunks data (chunkSize 0 means DefaultChunkSize).
func NewManifest(data []byte, chunkSize int) (Manifest, error) {
	if chunkSize == 0 {
		chunkSize = DefaultChunkSize
	}
	m := Manifest{Size: int64(len(data)), ChunkSize: chunkSize}
	n, err := numChunks(m.Size, chunkSize)
	if err != nil {
		return Manifest{}, err
	}
	m.Chunks = make([]Hash, n)
	for i := range n {
		off, end := m.ChunkRange(i)
		m.Chunks[i] = sha256.Sum256(data[off:end])
	}
	return m, nil
}

func numChunks(size int64, chunkSize int) (int, error) {
	if chunkSize < MinChunkSize || chunkSize > MaxChunkSize {
		return 0, fmt.Errorf("%w: chunk size %d outside [%d, %d]", ErrManifest, chunkSize, MinChunkSize, MaxChunkSize)
	}
	if size < 0 {
		return 0, fmt.Errorf("%w: negative size %d", ErrManifest, size)
	}
	n := (size + int64(chunkSize) - 1) / int64(chunkSize)
	if n > MaxManifestChunks {
		return 0, fmt.Errorf("%w: %d chunks, limit %d", ErrManifest, n, MaxManifestChunks)
	}
	return int(n), nil
}

// ChunkRange returns the byte range [off, end) of chunk i.
func (m *Manifest) ChunkRange(i int) (off, end int64) {
	off = int64(i) * int64(m.ChunkSize)
	return off, min(off+int64(m.ChunkSize), m.Size)
}

// Root is SHA-256 over the encoded manifest: it names the blob's content and chunking.
func (m *Manifest) Root() Hash { return sha256.Sum256(m.MarshalBinary()) }

// Validate checks that the chunk count matches the size and chunk size.
func (m *Manifest) Validate() error {
	n, err := numChunks(m.Size, m.ChunkSize)
	if err != nil {
		return err
	}
	if n != len(m.Chunks) {
		return fmt.Errorf("%w: %d chunk hashes for %d bytes in chunks of %d (want %d)", ErrManifest, len(m.Chunks), m.Size, m.ChunkSize, n)
	}
	return nil
}

// Manifest encoding: "CMF1" | size uint64 | chunk size uint32 | count uint32 | count × 32-byte hashes.
const manifestHeaderLen = 20

var manifestMagic = [4]byte{'C', 'M', 'F', '1'}

// MarshalBinary encodes the manifest.
func (m *Manifest) MarshalBinary() []byte {
	b := make([]byte, 0, manifestHeaderLen+32*len(m.Chunks))
	b = append(b, manifestMagic[:]...)
	b = binary.BigEndian.AppendUint64(b, uint64(m.Size))
	b = binary.BigEndian.AppendUint32(b, uint32(m.ChunkSize))
	b = binary.BigEndian.AppendUint32(b, uint32(len(m.Chunks)))
	for _, h := range m.Chunks {
		b = append(b, h[:]...)
	}
	return b
}

// UnmarshalManifest decodes and validates a manifest. It allocates only after checking
// that the input holds exactly the announced number of hashes.
func UnmarshalManifest(b []byte) (Manifest, error) {
	if len(b) < manifestHeaderLen {
		return Manifest{}, fmt.Errorf("%w: %d bytes, shorter than the %d-byte header", ErrManifest, len(b), manifestHeaderLen)
	}
	if [4]byte(b[:4]) != manifestMagic {
		return Manifest{}, fmt.Errorf("%w: bad magic % x", ErrManifest, b[:4])
	}
	size := binary.BigEndian.Uint64(b[4:])
	if size > 1<<62 {
		return Manifest{}, fmt.Errorf("%w: size %d too large", ErrManifest, size)
	}
	m := Manifest{Size: int64(size), ChunkSize: int(binary.BigEndian.Uint32(b[12:]))}
	count := uint64(binary.BigEndian.Uint32(b[16:]))
	if uint64(len(b)-manifestHeaderLen) != 32*count {
		return Manifest{}, fmt.Errorf("%w: %d bytes of hashes for %d chunks", ErrManifest, len(b)-manifestHeaderLen, count)
	}
	n, err := numChunks(m.Size, m.ChunkSize)
	if err != nil {
		return Manifest{}, err
	}
	if uint64(n) != count {
		return Manifest{}, fmt.Errorf("%w: %d chunks for %d bytes in chunks of %d (want %d)", ErrManifest, count, m.Size, m.ChunkSize, n)
	}
	m.Chunks = make([]Hash, n)
	for i := range m.Chunks {
		copy(m.Chunks[i][:], b[manifestHeaderLen+32*i:])
	}
	return m, nil
}

// Assembly collects a blob's chunks in any order, verifying each against the manifest.
// It is safe for concurrent use. Keep it to resume: a later Fetch or Push asks only for
// the chunks it still misses.
type Assembly struct {
	m    Manifest
	root Hash

	mu    sync.Mutex
	buf   []byte
	have  []bool
	nhave int
}

// ErrTooLarge is returned when a blob exceeds the receiver's size limit.
var ErrTooLarge = errors.New("transport: blob too large")

// NewAssembly prepares to receive the blob m describes, refusing blobs over maxSize bytes.
func NewAssembly(m Manifest, maxSize int64) (*Assembly, error) {
	if err := m.Validate(); err != nil {
		return nil, err
	}
	if m.Size > maxSize {
		return nil, fmt.Errorf("%w: %d bytes, limit %d", ErrTooLarge, m.Size, maxSize)
	}
	a := &Assembly{m: m, root: m.Root(),
		buf: make([]byte, m.Size), have: make([]bool, len(m.Chunks))}
	return a, nil
}

// Manifest returns the manifest being assembled.
func (a *Assembly) Manifest() Manifest { return a.m }

// Root returns the manifest's root hash.
func (a *Assembly) Root() Hash { return a.root }

// Put stores chunk i after checking its length and hash. Storing a chunk twice is harmless.
func (a *Assembly) Put(i int, data []byte) error {
	if i < 0 || i >= len(a.m.Chunks) {
		return fmt.Errorf("transport: chunk %d out of range [0, %d)", i, len(a.m.Chunks))
	}
	off, end := a.m.ChunkRange(i)
	if int64(len(data)) != end-off {
		return fmt.Errorf("%w: chunk %d has %d bytes, want %d", ErrChunkHash, i, len(data), end-off)
	}
	if sha256.Sum256(data) != a.m.Chunks[i] {
		return fmt.Errorf("%w: chunk %d", ErrChunkHash, i)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.have[i] {
		copy(a.buf[off:end], data)
		a.have[i] = true
		a.nhave++
	}
	return nil
}

// Has reports whether chunk i is stored.
func (a *Assembly) Has(i int) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return i >= 0 && i < len(a.have) && a.have[i]
}

// Missing lists the chunks not yet stored, in order.
func (a *Assembly) Missing() []int {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []int
	for i, h := range a.have {
		if !h {
			out = append(out, i)
		}
	}
	return out
}

// Complete reports whether every chunk is stored.
func (a *Assembly) Complete() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.nhave == len(a.have)
}

// Bytes returns the blob once complete (every chunk verified, so it matches the root).
func (a *Assembly) Bytes() ([]byte, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.nhave != len(a.have) {
		return nil, fmt.Errorf("transport: blob %s incomplete: %d of %d chunks", a.root, a.nhave, len(a.have))
	}
	return a.buf, nil
}
