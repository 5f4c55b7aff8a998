package compress

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// Format is the element format of the value stage: how each kept value
// (every value for a dense setting, the kept values of a top-k setting, the
// factor entries and pass-through values of a low-rank setting) is coded.
type Format uint8

// Value formats. The zero value is FP32.
const (
	FP32 Format = iota // 32-bit IEEE 754, bit-exact
	FP16               // IEEE 754 binary16, round to nearest even, saturating
	BF16               // bfloat16, round to nearest even, saturating
	Q8                 // blockwise absmax, codes in [-127, 127]
	Q4                 // blockwise absmax, codes in [-7, 7]
	Q2                 // blockwise absmax, ternary codes in [-1, 1]
	Q1                 // blockwise sign: one bit a value, the block's mean |x| as its scale
	numFormats
)

var formatNames = [numFormats]string{"fp32", "fp16", "bf16", "q8", "q4", "q2", "q1"}

// String returns the format's name in a setting string ("fp32", "q4", ...).
func (f Format) String() string {
	if f < numFormats {
		return formatNames[f]
	}
	return fmt.Sprintf("Format(%d)", uint8(f))
}

// Bits returns the bits per coded value, not counting block scales.
func (f Format) Bits() int {
	switch f {
	case FP32:
		return 32
	case FP16, BF16:
		return 16
	case Q8:
		return 8
	case Q4:
		return 4
	case Q2:
		return 2
	case Q1:
		return 1
	}
	return 0
}

// quantized reports whether f is a blockwise quantization format (one scale per Block values).
func (f Format) quantized() bool { return f == Q8 || f == Q4 || f == Q2 || f == Q1 }

// Sparsifier is the optional first stage of a setting.
type Sparsifier uint8

// Sparsifiers. The zero value is Dense (no first stage).
const (
	Dense   Sparsifier = iota // every value is coded
	TopK                      // the largest-magnitude Fraction of each chunk
	LowRank                   // rank-Rank factors of every matrix segment of the Shape
)

// Defaults that a zero field of Setting stands for.
const (
	DefaultBlock = 64   // Setting.Block: values per quantization block
	DefaultChunk = 4096 // Setting.Chunk: values per top-k chunk
	DefaultIters = 1    // Setting.Iters: power iterations per low-rank encode

	maxBlock    = 1 << 16
	maxChunk    = 1 << 20
	maxRank     = 1 << 10
	maxIters    = 16
	maxClip     = 1e6
	maxSetting  = 255 // bytes of a setting string in a header
	maxFraction = 1
)

// Setting names a codec. It is a plain value; its String form is what goes in
// every message header, and Parse(s.String()) returns an equivalent Setting.
// The zero value is "fp32". A zero numeric field means its documented default.
//
// Grammar (stages joined by '+', in this order, each optional but at least one):
//
//	setting    = [sparsifier "+"] [format] ["+" "zstd"]
//	sparsifier = "topk:" fraction ["/c" chunk] ["/m"] | "lowrank:" rank ["/i" iters]
//	format     = ("fp32" | "fp16" | "bf16") | ("q8" | "q4" | "q2") qopts | "q1" ["/b" block]
//	qopts      = ["/b" block] ["/clip" k] ["/sr"]
//
// Examples: "fp16", "q4/b128", "q8/clip3/sr", "topk:0.01+q4", "lowrank:4+q8",
// "topk:0.001/c65536+q2+zstd", "topk:0.03/m+q1", "zstd" (= "fp32+zstd"). "int8", "int4" and "int2"
// are accepted as aliases of q8, q4 and q2. The canonical String omits
// defaults and an fp32 format after a sparsifier ("topk:0.01", not
// "topk:0.01+fp32").
type Setting struct {
	Sparsifier Sparsifier

	// Fraction is, for TopK, the fraction of each chunk kept, in (0, 1]: a chunk
	// of m values keeps ceil(Fraction·m) of them (at least one).
	Fraction float64
	// Chunk is, for TopK, the number of values per selection chunk, in [2, 2^20].
	// Zero means DefaultChunk (4096).
	Chunk int
	// Matrices ("/m"), for TopK, selects only within the matrix segments of
	// the Config's Shape that hold at least one Chunk, chunk by chunk inside
	// each (chunks never straddle two tensors); every other value — vectors
	// such as biases, small matrices such as a classifier's — is kept, coded
	// densely with the value format. Those few values move the most per
	// parameter, and starving them costs accuracy (see the README).
	Matrices bool
	// Rank is, for LowRank, the rank r of the factors, in [1, 1024].
	Rank int
	// Iters is, for LowRank, the number of power iterations per encode, in
	// [1, 16]. Zero means DefaultIters (1, as in PowerSGD).
	Iters int

	// Format codes the values that the sparsifier keeps (or all values).
	Format Format
	// Block is, for Q8/Q4/Q2/Q1, the number of values sharing one scale: a
	// multiple of 8 in [8, 65536]. Zero means DefaultBlock (64).
	Block int
	// Clip is, for Q8/Q4/Q2, k > 0 to clip values to ±k·σ before quantizing,
	// σ being the root mean square of the values coded. Zero means no clipping.
	Clip float64
	// Stochastic selects stochastic rounding (seeded by Config.Seed) for
	// Q8/Q4/Q2 instead of round-to-nearest-even.
	Stochastic bool

	// Zstd compresses the payload losslessly with zstd as the last stage.
	Zstd bool
}

// normalized returns s with defaults filled in and fields that do not apply
// to its stages cleared, so that equivalent settings compare equal.
func (s Setting) normalized() Setting {
	n := Setting{Sparsifier: s.Sparsifier, Format: s.Format, Zstd: s.Zstd}
	switch s.Sparsifier {
	case TopK:
		n.Fraction = s.Fraction
		n.Chunk = s.Chunk
		n.Matrices = s.Matrices
		if n.Chunk == 0 {
			n.Chunk = DefaultChunk
		}
	case LowRank:
		n.Rank = s.Rank
		n.Iters = s.Iters
		if n.Iters == 0 {
			n.Iters = DefaultIters
		}
	}
	if s.Format.quantized() {
		n.Block = s.Block
		if n.Block == 0 {
			n.Block = DefaultBlock
		}
		n.Clip = s.Clip
		n.Stochastic = s.Stochastic
	}
	return n
}

// Validate reports whether every field of s is in range; the error wraps
// ErrSetting and names the field.
func (s Setting) Validate() error {
	n := s.normalized()
	switch s.Sparsifier {
	case Dense:
	case TopK:
		if !(n.Fraction > 0 && n.Fraction <= maxFraction) { // also rejects NaN
			return fmt.Errorf("%w: top-k fraction %v not in (0, 1]", ErrSetting, s.Fraction)
		}
		if n.Chunk < 2 || n.Chunk > maxChunk {
			return fmt.Errorf("%w: top-k chunk %d not in [2, %d]", ErrSetting, s.Chunk, maxChunk)
		}
	case LowRank:
		if n.Rank < 1 || n.Rank > maxRank {
			return fmt.Errorf("%w: low-rank rank %d not in [1, %d]", ErrSetting, s.Rank, maxRank)
		}
		if n.Iters < 1 || n.Iters > maxIters {
			return fmt.Errorf("%w: low-rank iterations %d not in [1, %d]", ErrSetting, s.Iters, maxIters)
		}
	default:
		return fmt.Errorf("%w: unknown sparsifier %d", ErrSetting, s.Sparsifier)
	}
	if s.Format >= numFormats {
		return fmt.Errorf("%w: unknown format %d", ErrSetting, s.Format)
	}
	if s.Format.quantized() {
		if n.Block < 8 || n.Block > maxBlock || n.Block%8 != 0 {
			return fmt.Errorf("%w: block %d not a multiple of 8 in [8, %d]", ErrSetting, s.Block, maxBlock)
		}
		if n.Clip < 0 || n.Clip > maxClip || math.IsNaN(n.Clip) {
			return fmt.Errorf("%w: clip %v not in [0, %g]", ErrSetting, s.Clip, float64(maxClip))
		}
		if s.Format == Q1 && (n.Clip != 0 || n.Stochastic) {
			return fmt.Errorf("%w: q1 takes no clipping or stochastic rounding", ErrSetting)
		}
	}
	if len(s.String()) > maxSetting {
		return fmt.Errorf("%w: setting string longer than %d bytes", ErrSetting, maxSetting)
	}
	return nil
}

// String returns the canonical setting string. Settings that code alike
// (differing only in defaulted or unused fields) have the same String.
func (s Setting) String() string {
	n := s.normalized()
	var b strings.Builder
	switch n.Sparsifier {
	case TopK:
		b.WriteString("topk:")
		b.WriteString(strconv.FormatFloat(n.Fraction, 'g', -1, 64))
		if n.Chunk != DefaultChunk {
			fmt.Fprintf(&b, "/c%d", n.Chunk)
		}
		if n.Matrices {
			b.WriteString("/m")
		}
	case LowRank:
		fmt.Fprintf(&b, "lowrank:%d", n.Rank)
		if n.Iters != DefaultIters {
			fmt.Fprintf(&b, "/i%d", n.Iters)
		}
	case Dense:
	default:
		fmt.Fprintf(&b, "Sparsifier(%d)", uint8(n.Sparsifier))
	}
	if n.Sparsifier == Dense || n.Format != FP32 {
		if b.Len() > 0 {
			b.WriteByte('+')
		}
		b.WriteString(n.Format.String())
		if n.Format.quantized() {
			if n.Block != DefaultBlock {
				fmt.Fprintf(&b, "/b%d", n.Block)
			}
			if n.Clip != 0 {
				b.WriteString("/clip")
				b.WriteString(strconv.FormatFloat(n.Clip, 'g', -1, 64))
			}
			if n.Stochastic {
				b.WriteString("/sr")
			}
		}
	}
	if n.Zstd {
		b.WriteString("+zstd")
	}
	return b.String()
}

// Equal reports whether s and t code alike.
func (s Setting) Equal(t Setting) bool { return s.normalized() == t.normalized() }

// Parse parses a setting string (see Setting for the grammar). The result is
// validated; errors wrap ErrSetting.
func Parse(str string) (Setting, error) {
	var s Setting
	if str == "" {
		return s, fmt.Errorf("%w: empty setting", ErrSetting)
	}
	if len(str) > maxSetting {
		return s, fmt.Errorf("%w: setting longer than %d bytes", ErrSetting, maxSetting)
	}
	stages := strings.Split(str, "+")
	const (
		wantSparsifier = iota
		wantFormat
		wantZstd
		wantEnd
	)
	state := wantSparsifier
	for _, st := range stages {
		name, opts, _ := strings.Cut(st, "/")
		var arg string
		name, arg, hasArg := strings.Cut(name, ":")
		bad := func(format string, a ...any) (Setting, error) {
			return Setting{}, fmt.Errorf("%w: %q: stage %q: %s", ErrSetting, str, st, fmt.Sprintf(format, a...))
		}
		switch name {
		case "topk", "lowrank":
			if state > wantSparsifier {
				return bad("a sparsifier must come first")
			}
			if !hasArg {
				return bad("missing argument after %q", name+":")
			}
			if name == "topk" {
				f, err := strconv.ParseFloat(arg, 64)
				if err != nil || !(f > 0 && f <= 1) {
					return bad("fraction %q not a number in (0, 1]", arg)
				}
				s.Sparsifier, s.Fraction = TopK, f
			} else {
				r, err := strconv.Atoi(arg)
				if err != nil || r < 1 || r > maxRank {
					return bad("rank %q not an integer in [1, %d]", arg, maxRank)
				}
				s.Sparsifier, s.Rank = LowRank, r
			}
			for opt := range strings.SplitSeq(opts, "/") {
				switch {
				case opts == "":
				case name == "topk" && strings.HasPrefix(opt, "c"):
					v, err := strconv.Atoi(opt[1:])
					if err != nil || s.Chunk != 0 || v < 2 || v > maxChunk {
						return bad("chunk option %q not an integer in [2, %d] given once", opt, maxChunk)
					}
					s.Chunk = v
				case name == "topk" && opt == "m":
					if s.Matrices {
						return bad("option m given twice")
					}
					s.Matrices = true
				case name == "lowrank" && strings.HasPrefix(opt, "i"):
					v, err := strconv.Atoi(opt[1:])
					if err != nil || s.Iters != 0 || v < 1 || v > maxIters {
						return bad("iterations option %q not an integer in [1, %d] given once", opt, maxIters)
					}
					s.Iters = v
				default:
					return bad("unknown option %q", opt)
				}
			}
			state = wantFormat
		case "fp32", "fp16", "bf16", "q8", "q4", "q2", "q1", "int8", "int4", "int2":
			if state > wantFormat {
				return bad("the format must come before zstd and only once")
			}
			if hasArg {
				return bad("unexpected argument %q", arg)
			}
			switch name {
			case "fp32":
				s.Format = FP32
			case "fp16":
				s.Format = FP16
			case "bf16":
				s.Format = BF16
			case "q8", "int8":
				s.Format = Q8
			case "q4", "int4":
				s.Format = Q4
			case "q2", "int2":
				s.Format = Q2
			case "q1":
				s.Format = Q1
			}
			if opts != "" && !s.Format.quantized() {
				return bad("%s takes no options", name)
			}
			if opts != "" {
				for opt := range strings.SplitSeq(opts, "/") {
					switch {
					case strings.HasPrefix(opt, "b") && s.Block == 0:
						v, err := strconv.Atoi(opt[1:])
						if err != nil || v < 8 || v > maxBlock || v%8 != 0 {
							return bad("block option %q not a multiple of 8 in [8, %d]", opt, maxBlock)
						}
						s.Block = v
					case strings.HasPrefix(opt, "clip") && s.Clip == 0:
						v, err := strconv.ParseFloat(opt[4:], 64)
						if err != nil || !(v > 0 && v <= maxClip) {
							return bad("clip option %q not a number in (0, %g]", opt, float64(maxClip))
						}
						s.Clip = v
					case s.Format == Q1:
						return bad("q1 takes only a block option, not %q", opt)
					case opt == "sr" && !s.Stochastic:
						s.Stochastic = true
					default:
						return bad("unknown or repeated option %q", opt)
					}
				}
			}
			state = wantZstd
		case "zstd":
			if state > wantZstd || hasArg || opts != "" {
				return bad("zstd must be the last stage, once, without options")
			}
			s.Zstd = true
			state = wantEnd
		default:
			return bad("unknown stage")
		}
	}
	if err := s.Validate(); err != nil {
		return Setting{}, err
	}
	return s, nil
}

// MustParse is Parse for settings known to be valid, such as constants in
// tests; it panics on error.
func MustParse(str string) Setting {
	s, err := Parse(str)
	if err != nil {
		panic("compress: " + err.Error())
	}
	return s
}
