package datasets

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"math"
	"slices"
)

// Hash is the SHA-256 of a sample's canonical encoding.
type Hash [sha256.Size]byte

// HashImage returns the hash of an image sample: SHA-256 of its label byte
// followed by its pixels.
func HashImage(label uint8, pixels []uint8) Hash {
	h := sha256.New()
	h.Write([]byte{label})
	h.Write(pixels)
	var out Hash
	h.Sum(out[:0])
	return out
}

// HashText returns the hash of a text sample: SHA-256 of its bytes.
func HashText(text string) Hash { return sha256.Sum256([]byte(text)) }

// SampleHashes returns the hashes of the images in idx, or of all images
// when idx is nil. It panics if an index is out of range.
func (m *Images) SampleHashes(idx []int) []Hash {
	if idx == nil {
		out := make([]Hash, m.Len())
		for i := range out {
			out[i] = HashImage(m.Labels[i], m.Image(i))
		}
		return out
	}
	out := make([]Hash, len(idx))
	for k, i := range idx {
		if i < 0 || i >= m.Len() {
			panic(fmt.Sprintf("datasets: image index %d out of range [0,%d)", i, m.Len()))
		}
		out[k] = HashImage(m.Labels[i], m.Image(i))
	}
	return out
}

// SampleHashes returns the hashes of the texts of the speeches in idx, or of
// all speeches when idx is nil. It panics if an index is out of range.
func (p *Play) SampleHashes(idx []int) []Hash {
	if idx == nil {
		out := make([]Hash, len(p.Speeches))
		for i, s := range p.Speeches {
			out[i] = HashText(s.Text)
		}
		return out
	}
	out := make([]Hash, len(idx))
	for k, i := range idx {
		if i < 0 || i >= len(p.Speeches) {
			panic(fmt.Sprintf("datasets: speech index %d out of range [0,%d)", i, len(p.Speeches)))
		}
		out[k] = HashText(p.Speeches[i].Text)
	}
	return out
}

// SketchSize is the number of MinHash slots in a Sketch. The standard error
// of an Overlap estimate J is sqrt(J(1-J)/SketchSize), at most 0.044.
const SketchSize = 128

// emptySlot is the value of every slot of the sketch of an empty set.
const emptySlot = math.MaxUint64

// Sketch is a MinHash sketch of a set of sample hashes: slot j holds the
// least value of h_j over the set, where h_j(x) = mix64(x[0:8] ^ seed_j),
// mix64 the MurmurHash3 64-bit finaliser and seed_j a fixed SplitMix64
// sequence. The probability that two sets agree in a slot is their Jaccard
// similarity |A∩B| / |A∪B|.
type Sketch [SketchSize]uint64

var sketchSeeds = func() (s [SketchSize]uint64) {
	x := uint64(0x636f686f72742d31) // "cohort-1"
	for j := range s {
		x += 0x9e3779b97f4a7c15
		z := x
		z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
		z = (z ^ (z >> 27)) * 0x94d049bb133111eb
		s[j] = z ^ (z >> 31)
	}
	return s
}()

func mix64(z uint64) uint64 {
	z ^= z >> 33
	z *= 0xff51afd7ed558ccd
	z ^= z >> 33
	z *= 0xc4ceb9fe1a85ec53
	z ^= z >> 33
	return z
}

// NewSketch returns the MinHash sketch of the set of hashes (order and
// repetition do not matter).
func NewSketch(hashes []Hash) Sketch {
	var s Sketch
	for j := range s {
		s[j] = emptySlot
	}
	for _, h := range hashes {
		x := binary.LittleEndian.Uint64(h[:8])
		for j, seed := range sketchSeeds {
			if v := mix64(x ^ seed); v < s[j] {
				s[j] = v
			}
		}
	}
	return s
}

// Empty reports whether s is the sketch of the empty set.
func (s *Sketch) Empty() bool {
	for _, v := range s {
		if v != emptySlot {
			return false
		}
	}
	return true
}

// Overlap estimates the Jaccard similarity |A∩B| / |A∪B| of the sets behind
// two sketches: the fraction of slots in which they agree. It is 0 when
// either set is empty. Two shards sharing half of their samples (|A∩B| =
// |A|/2 = |B|/2) have Jaccard similarity 1/3.
func Overlap(a, b Sketch) float64 {
	same := 0
	for j := range a {
		if a[j] == b[j] && a[j] != emptySlot {
			same++
		}
	}
	return float64(same) / SketchSize
}

// Fingerprint identifies a shard's content independently of sample order and
// of any file or shard name.
type Fingerprint struct {
	// N is the number of samples, counting repeats.
	N int
	// Digest is SHA-256 over "cohort-fingerprint-v1" and the sorted sample
	// hashes (repeats kept): equal digests mean the same multiset of samples.
	Digest Hash
	// Sketch estimates overlap with other shards (see Overlap).
	Sketch Sketch
}

const fingerprintDomain = "cohort-fingerprint-v1"

// NewFingerprint returns the fingerprint of a shard from its sample hashes
// (in any order; hashes is not modified).
func NewFingerprint(hashes []Hash) Fingerprint {
	sorted := slices.Clone(hashes)
	slices.SortFunc(sorted, func(a, b Hash) int { return bytes.Compare(a[:], b[:]) })
	h := sha256.New()
	h.Write([]byte(fingerprintDomain))
	for i := range sorted {
		h.Write(sorted[i][:])
	}
	f := Fingerprint{N: len(hashes), Sketch: NewSketch(hashes)}
	h.Sum(f.Digest[:0])
	return f
}

// Overlap estimates the Jaccard similarity of f's and g's sample sets.
func (f Fingerprint) Overlap(g Fingerprint) float64 { return Overlap(f.Sketch, g.Sketch) }

// EstimateShared estimates the number of distinct samples f and g have in
// common, J·(|A|+|B|)/(1+J) from the Jaccard estimate J, taking N as the set
// sizes (exact when the shards hold no repeats).
func EstimateShared(f, g Fingerprint) float64 {
	j := Overlap(f.Sketch, g.Sketch)
	return j * float64(f.N+g.N) / (1 + j)
}

// String returns a short form: "n=6000 sha256:0123456789abcdef".
func (f Fingerprint) String() string {
	return fmt.Sprintf("n=%d sha256:%s", f.N, hex.EncodeToString(f.Digest[:8]))
}

const fingerprintMagic = "CFP1"

// MarshalBinary encodes f: "CFP1", N as a uvarint, the 32-byte digest and the
// 128 sketch slots as little-endian uint64s.
func (f Fingerprint) MarshalBinary() ([]byte, error) {
	if f.N < 0 {
		return nil, fmt.Errorf("%w: fingerprint with N=%d", ErrInvalidArgument, f.N)
	}
	b := make([]byte, 0, len(fingerprintMagic)+binary.MaxVarintLen64+len(f.Digest)+8*SketchSize)
	b = append(b, fingerprintMagic...)
	b = binary.AppendUvarint(b, uint64(f.N))
	b = append(b, f.Digest[:]...)
	for _, v := range f.Sketch {
		b = binary.LittleEndian.AppendUint64(b, v)
	}
	return b, nil
}

// UnmarshalBinary decodes what MarshalBinary produced. It rejects a bad
// magic, a truncated or over-long input, and an inconsistent fingerprint
// (N = 0 with a non-empty sketch or N > 0 with an empty one), wrapping
// ErrMalformed or ErrTruncated.
func (f *Fingerprint) UnmarshalBinary(b []byte) error {
	if len(b) < len(fingerprintMagic) {
		return fmt.Errorf("%w: fingerprint: %d bytes", ErrTruncated, len(b))
	}
	if string(b[:4]) != fingerprintMagic {
		return fmt.Errorf("%w: fingerprint: bad magic %q", ErrMalformed, b[:4])
	}
	b = b[4:]
	n, k := binary.Uvarint(b)
	if k == 0 {
		return fmt.Errorf("%w: fingerprint: sample count cut short", ErrTruncated)
	}
	if k < 0 || n > 1<<48 {
		return fmt.Errorf("%w: fingerprint: sample count overflows", ErrMalformed)
	}
	b = b[k:]
	if want := len(f.Digest) + 8*SketchSize; len(b) != want {
		if len(b) < want {
			return fmt.Errorf("%w: fingerprint: %d bytes after the count, want %d", ErrTruncated, len(b), want)
		}
		return fmt.Errorf("%w: fingerprint: %d trailing bytes", ErrMalformed, len(b)-want)
	}
	var g Fingerprint
	g.N = int(n)
	copy(g.Digest[:], b)
	b = b[len(g.Digest):]
	for j := range g.Sketch {
		g.Sketch[j] = binary.LittleEndian.Uint64(b[8*j:])
	}
	if (g.N == 0) != g.Sketch.Empty() {
		return fmt.Errorf("%w: fingerprint: N=%d inconsistent with its sketch", ErrMalformed, g.N)
	}
	*f = g
	return nil
}
