package consensus

import (
	"math"
	"math/bits"
	"strconv"
	"strings"
)

// ModelShape is what the state knows of a proposed model: enough to bound what training it costs
// every coordinator and peer.
type ModelShape struct {
	Params uint64 // parameters in the flat vector (saturates at 2^64-1)
	Layers uint32 // weight layers of an MLP, transformer blocks otherwise
	Width  uint64 // the widest dimension: a layer, the vocabulary, the context or an MLP's hidden width
}

// Model spec grammar (the trainer's, without importing it):
//
//	mlp                          the Fashion-MNIST MLP, mlp:784-256-10
//	mlp:N0-N1-...-Nk             layer widths, k ≥ 1, each ≥ 2; params Σ N(i)·N(i+1) + N(i+1)
//	charlm                       the trainer's character model on its embedded play: counted as
//	                             charlm:v256-t64-d64-h128 (its vocabulary has at most 256 symbols)
//	charlm:vV-tT-dD-hH[-ln]      one causal attention block (trainer/nn CharLM): V, T, D ≥ 2, H = 0
//	                             (no MLP) or ≥ 2
//	gpt:L-D-H-T                  L pre-LN blocks of width D with H heads (D divisible by H), context
//	                             T ≥ 2, byte vocabulary 256, learned positions, tied output head, 4·D
//	                             GELU MLP, biases everywhere (counted like nanoGPT)
//
// Numbers are decimal as strconv.Atoi reads them.
const (
	charLMDefault = "charlm:v256-t64-d64-h128"
	gptVocab      = 256
)

// ParseModel parses a model spec and counts its parameters. An unparseable spec yields an error
// wrapping ErrInvalid that names what was wrong. Counts saturate instead of overflowing, so a
// huge spec is reported as too large by the limits rather than wrapped around.
func ParseModel(spec string) (ModelShape, error) {
	switch {
	case spec == "mlp":
		return ParseModel("mlp:784-256-10")
	case strings.HasPrefix(spec, "mlp:"):
		return parseMLP(spec)
	case spec == "charlm":
		return ParseModel(charLMDefault)
	case strings.HasPrefix(spec, "charlm:"):
		return parseCharLM(spec)
	case strings.HasPrefix(spec, "gpt:"):
		return parseGPT(spec)
	}
	return ModelShape{}, errf(ErrInvalid, "model %q: want mlp:N-N-..., charlm:vV-tT-dD-hH[-ln] or gpt:L-D-H-T", spec)
}

func mulSat(a, b uint64) uint64 {
	hi, lo := bits.Mul64(a, b)
	if hi != 0 {
		return math.MaxUint64
	}
	return lo
}

func addSat(xs ...uint64) uint64 {
	var t uint64
	for _, x := range xs {
		var c uint64
		if t, c = bits.Add64(t, x, 0); c != 0 {
			return math.MaxUint64
		}
	}
	return t
}

// atoi reads a non-negative decimal as the trainer does (strconv.Atoi).
func atoi(spec, what, s string) (uint64, error) {
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 {
		return 0, errf(ErrInvalid, "model %q: %s %q is not a non-negative number", spec, what, s)
	}
	return uint64(n), nil
}

func parseMLP(spec string) (ModelShape, error) {
	parts := strings.Split(strings.TrimPrefix(spec, "mlp:"), "-")
	if len(parts) < 2 {
		return ModelShape{}, errf(ErrInvalid, "model %q: an mlp needs at least input and output widths", spec)
	}
	sizes := make([]uint64, len(parts))
	var sh ModelShape
	for i, p := range parts {
		n, err := atoi(spec, "layer "+strconv.Itoa(i), p)
		if err != nil {
			return ModelShape{}, err
		}
		if n < 2 {
			return ModelShape{}, errf(ErrInvalid, "model %q: layer %d width %d, want ≥ 2", spec, i, n)
		}
		sizes[i] = n
		sh.Width = max(sh.Width, n)
	}
	for i := 0; i+1 < len(sizes); i++ {
		sh.Params = addSat(sh.Params, mulSat(sizes[i], sizes[i+1]), sizes[i+1])
	}
	sh.Layers = uint32(len(sizes) - 1) // < MaxNameLen
	return sh, nil
}

func parseCharLM(spec string) (ModelShape, error) {
	rest, ln := strings.CutSuffix(strings.TrimPrefix(spec, "charlm:"), "-ln")
	parts := strings.Split(rest, "-")
	if len(parts) != 4 {
		return ModelShape{}, errf(ErrInvalid, "model %q: want charlm:v<vocab>-t<context>-d<embed>-h<hidden>[-ln]", spec)
	}
	var v [4]uint64
	for i, prefix := range []string{"v", "t", "d", "h"} {
		digits, ok := strings.CutPrefix(parts[i], prefix)
		if !ok {
			return ModelShape{}, errf(ErrInvalid, "model %q: field %q does not start with %q", spec, parts[i], prefix)
		}
		n, err := atoi(spec, "field "+prefix, digits)
		if err != nil {
			return ModelShape{}, err
		}
		if (prefix != "h" && n < 2) || (prefix == "h" && n == 1) {
			return ModelShape{}, errf(ErrInvalid, "model %q: field %q, want ≥ 2 (h0 for no MLP)", spec, parts[i])
		}
		v[i] = n
	}
	V, T, D, H := v[0], v[1], v[2], v[3]
	p := addSat(mulSat(V, D), mulSat(T, D), mulSat(4, mulSat(D, D)), D) // embeddings, attention
	if H > 0 {
		p = addSat(p, mulSat(2, mulSat(D, H)), H, D) // mlp.w1, w2, b1, b2
	}
	p = addSat(p, mulSat(D, V), V) // output projection
	if ln {
		norms := uint64(2) // ln1, lnf
		if H > 0 {
			norms++ // ln2
		}
		p = addSat(p, mulSat(2*norms, D))
	}
	return ModelShape{Params: p, Layers: 1, Width: max(V, T, D, H)}, nil
}

func parseGPT(spec string) (ModelShape, error) {
	parts := strings.Split(strings.TrimPrefix(spec, "gpt:"), "-")
	if len(parts) != 4 {
		return ModelShape{}, errf(ErrInvalid, "model %q: want gpt:<layers>-<width>-<heads>-<context>", spec)
	}
	var v [4]uint64
	for i, what := range []string{"layers", "width", "heads", "context"} {
		n, err := atoi(spec, what, parts[i])
		if err != nil {
			return ModelShape{}, err
		}
		v[i] = n
	}
	L, D, H, T := v[0], v[1], v[2], v[3]
	switch {
	case L < 1 || D < 1 || H < 1:
		return ModelShape{}, errf(ErrInvalid, "model %q: layers, width and heads must be ≥ 1", spec)
	case D%H != 0:
		return ModelShape{}, errf(ErrInvalid, "model %q: width %d is not divisible by %d heads", spec, D, H)
	case T < 2:
		return ModelShape{}, errf(ErrInvalid, "model %q: context %d, want ≥ 2", spec, T)
	case L > math.MaxUint32:
		return ModelShape{}, errf(ErrInvalid, "model %q: %d layers", spec, L)
	}
	// Per block: ln_1 2D, attention c_attn D·3D+3D and c_proj D·D+D, ln_2 2D, MLP c_fc D·4D+4D and
	// c_proj 4D·D+D: 12D² + 13D. Then token and position embeddings and ln_f; the head is tied.
	block := addSat(mulSat(12, mulSat(D, D)), mulSat(13, D))
	p := addSat(mulSat(gptVocab, D), mulSat(T, D), mulSat(L, block), mulSat(2, D))
	return ModelShape{Params: p, Layers: uint32(L), Width: max(gptVocab, T, mulSat(4, D))}, nil
}

// checkModel parses a proposal's model spec and checks it against the limits.
func checkModel(spec string, l Limits) error {
	sh, err := ParseModel(spec)
	if err != nil {
		return err
	}
	switch {
	case sh.Params > l.MaxModelParams:
		return errf(ErrLimit, "model %q has %d parameters, limit MaxModelParams %d", spec, sh.Params, l.MaxModelParams)
	case sh.Layers > l.MaxModelLayers:
		return errf(ErrLimit, "model %q has %d layers, limit MaxModelLayers %d", spec, sh.Layers, l.MaxModelLayers)
	case sh.Width > l.MaxModelWidth:
		return errf(ErrLimit, "model %q is %d wide, limit MaxModelWidth %d", spec, sh.Width, l.MaxModelWidth)
	}
	return nil
}
