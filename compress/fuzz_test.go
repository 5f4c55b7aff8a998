package compress

import (
	"bytes"
	"errors"
	"testing"
)

// Fuzz targets, one per codec family. Each input picks a setting of the
// family, optionally has its CRC recomputed (so that mutations reach the
// payload checks instead of stopping at the checksum), and is decoded:
// decoding must not panic; a decoded vector must be finite and as long as
// the header says; re-encoding it must succeed and decode again within the
// codec's error bound, and for deterministic dense codecs re-encoding is a
// fixed point (encode∘decode of a re-encoded message gives the same bytes).

const fuzzN = 400 // length of the seed vectors; the Shape of low-rank codecs fits it

var (
	denseFamily   = []string{"fp32", "fp16", "bf16", "q8", "q4", "q2", "q8/b8", "q4/b16/clip2", "q2/sr", "q1", "q1/b8"}
	topkFamily    = []string{"topk:0.1/c16", "topk:0.05+q4", "topk:0.3/c8+q2/b8", "topk:0.2/c32+fp16", "topk:0.5/c2+q8/sr", "topk:0.1/c16/m+q1/b8", "topk:0.2/c64/m"}
	lowrankFamily = []string{"lowrank:2", "lowrank:4+q8", "lowrank:1/i2+fp16", "lowrank:3+q2/b8"}
	zstdFamily    = []string{"fp32+zstd", "q4+zstd", "topk:0.1+q8+zstd", "lowrank:2+fp16+zstd"}
)

func fuzzCodec(t testing.TB, setting string) *Codec {
	s := MustParse(setting)
	cfg := Config{Setting: s, Seed: 1, MaxElements: 1 << 16} // small: keeps every exec fast
	if s.Sparsifier == LowRank || s.Matrices {
		cfg.Shape = testShape(fuzzN)
	}
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func fuzzDecode(f *testing.F, family []string) {
	for i, setting := range family {
		c := fuzzCodec(f, setting)
		lengths := []int{0, 1, 13, 100, fuzzN}
		if c.set.Sparsifier == LowRank || c.set.Matrices {
			lengths = []int{c.cfg.Shape.Len(), fuzzN}
		}
		for _, n := range lengths {
			msg, err := c.Encode(nil, heavy(n, uint64(n)))
			if err != nil {
				f.Fatal(err)
			}
			f.Add(uint8(i), msg, false)
			f.Add(uint8(i), msg, true)
		}
	}
	f.Fuzz(func(t *testing.T, which uint8, msg []byte, fix bool) {
		c := fuzzCodec(t, family[int(which)%len(family)])
		if fix {
			msg = recrc(bytes.Clone(msg))
		}
		d, err := c.Decode(nil, msg)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrVersion) && !errors.Is(err, ErrSetting) &&
				!errors.Is(err, ErrSettingMismatch) && !errors.Is(err, ErrShapeMismatch) && !errors.Is(err, ErrLength) {
				t.Fatalf("Decode error wraps no sentinel: %v", err)
			}
			return
		}
		if h, _ := ReadHeader(msg); uint64(len(d)) != h.Count {
			t.Fatalf("decoded %d values, header says %d", len(d), h.Count)
		}
		if i := firstNonFinite(d); i >= 0 {
			t.Fatalf("decoded value %d is %v", i, d[i])
		}
		m2, err := c.Encode(nil, d)
		if err != nil {
			if c.set.Sparsifier == LowRank && errors.Is(err, ErrNonFinite) {
				return // factors of huge decoded values can overflow float32
			}
			t.Fatalf("re-encoding a decoded vector: %v", err)
		}
		d2, err := c.Decode(nil, m2)
		if err != nil {
			t.Fatalf("decoding a re-encoded vector: %v", err)
		}
		checkDecoded(t, c, d, d2)
		s := c.set
		if s.Sparsifier == LowRank || s.Stochastic || s.Clip != 0 {
			return
		}
		m3, err := c.Encode(nil, d2)
		if err != nil {
			t.Fatal(err)
		}
		if s.Sparsifier == Dense && !bytes.Equal(m2, m3) {
			t.Fatalf("encode(decode(m)) is not a fixed point:\n%x\n%x", m2, m3)
		}
		if s.Sparsifier == TopK && !s.Format.quantized() {
			d3, err := c.Decode(nil, m3)
			if err != nil {
				t.Fatal(err)
			}
			for i := range d3 {
				if d3[i] != d2[i] {
					t.Fatalf("value %d: %g after two re-encodings, %g after one", i, d3[i], d2[i])
				}
			}
		}
	})
}

func FuzzDecodeDense(f *testing.F)   { fuzzDecode(f, denseFamily) }
func FuzzDecodeTopK(f *testing.F)    { fuzzDecode(f, topkFamily) }
func FuzzDecodeLowRank(f *testing.F) { fuzzDecode(f, lowrankFamily) }
func FuzzDecodeZstd(f *testing.F)    { fuzzDecode(f, zstdFamily) }

// FuzzReadHeader: any bytes; never panics, and a parsed header's payload is
// a suffix of the message.
func FuzzReadHeader(f *testing.F) {
	c := fuzzCodec(f, "q4")
	msg, _ := c.Encode(nil, heavy(10, 1))
	f.Add(msg)
	f.Add([]byte(Magic))
	f.Fuzz(func(t *testing.T, msg []byte) {
		h, err := ReadHeader(msg)
		if err == nil && !bytes.HasSuffix(msg, h.Payload) {
			t.Fatal("payload is not the message's suffix")
		}
	})
}

// FuzzEncode: any finite input of any length round-trips within bounds for
// every setting family.
func FuzzEncode(f *testing.F) {
	f.Add(uint8(0), []byte{1, 2, 3, 4, 5, 6, 7, 8})
	f.Add(uint8(7), bytes.Repeat([]byte{0, 0, 0x80, 0x3f}, 100))
	all := append(append(append([]string{}, denseFamily...), topkFamily...), zstdFamily[:3]...)
	f.Fuzz(func(t *testing.T, which uint8, raw []byte) {
		c := fuzzCodec(t, all[int(which)%len(all)])
		x := make([]float32, len(raw)/4)
		for i := range x {
			v := uint32(raw[4*i]) | uint32(raw[4*i+1])<<8 | uint32(raw[4*i+2])<<16 | uint32(raw[4*i+3])<<24
			if v&0x7f800000 == 0x7f800000 {
				v &^= 0x00800000 // make it finite
			}
			x[i] = fromBits(v)
		}
		msg, err := c.Encode(nil, x)
		if err != nil {
			t.Fatal(err)
		}
		d, err := c.Decode(nil, msg)
		if err != nil {
			t.Fatal(err)
		}
		checkDecoded(t, c, x, d)
	})
}
