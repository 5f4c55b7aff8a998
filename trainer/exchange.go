package trainer

import (
	"fmt"

	"github.com/cohortlab/cohort/compress"
	"github.com/cohortlab/cohort/trainer/nn"
)

// CodecShape describes the matrix-shaped tensors of a layout to the codecs (low-rank factors
// matrices; every other setting only checks the shape's hash).
func CodecShape(l nn.Layout) compress.Shape {
	var s compress.Shape
	for _, t := range l {
		if len(t.Shape) == 2 && t.Shape[0] > 1 && t.Shape[1] > 1 {
			s = append(s, compress.Segment{Offset: t.Offset, Rows: t.Shape[0], Cols: t.Shape[1]})
		}
	}
	return s
}

// CodecExchange compresses every worker's pseudo-gradient with a codec and error feedback, the way
// a peer does before sending it: e_i += Δ_i; msg = C(e_i); e_i −= decode(msg). The aggregator's
// side decodes msg with its own codec instance. Bytes counted are the encoded message sizes,
// header included.
type CodecExchange struct {
	setting   compress.Setting
	residuals []*compress.Residual
	decoders  []*compress.Codec
	msgs      [][]byte
	decoded   [][]float32
}

// NewCodecExchange returns an exchanger for workers peers of a model with layout l.
// decay (0 = none) is the error-feedback decay β of compress.Residual.SetDecay.
func NewCodecExchange(setting string, l nn.Layout, workers int, seed uint64, decay float32) (*CodecExchange, error) {
	return NewShapedCodecExchange(setting, CodecShape(l), l.Size(), workers, seed, decay)
}

// NewShapedCodecExchange is NewCodecExchange for vectors of n values whose matrices are shape:
// a range of a model's vector (CodecShape(layout).Slice(lo, hi)) coded on its own. Worker w's
// codec is seeded seed·7919 + w.
func NewShapedCodecExchange(setting string, shape compress.Shape, n, workers int, seed uint64, decay float32) (*CodecExchange, error) {
	s, err := compress.Parse(setting)
	if err != nil {
		return nil, fmt.Errorf("codec: %w", err)
	}
	x := &CodecExchange{setting: s}
	for i := 0; i < workers; i++ {
		cfg := compress.Config{Setting: s, Shape: shape, Seed: seed*7919 + uint64(i)}
		enc, err := compress.New(cfg)
		if err != nil {
			return nil, fmt.Errorf("codec %s: %w", setting, err)
		}
		r, err := enc.NewResidual(n)
		if err != nil {
			return nil, fmt.Errorf("codec %s: %w", setting, err)
		}
		if decay != 0 {
			if err := r.SetDecay(decay); err != nil {
				return nil, err
			}
		}
		dec, err := compress.New(cfg)
		if err != nil {
			return nil, fmt.Errorf("codec %s: %w", setting, err)
		}
		x.residuals = append(x.residuals, r)
		x.decoders = append(x.decoders, dec)
	}
	x.msgs = make([][]byte, workers)
	x.decoded = make([][]float32, workers)
	return x, nil
}

// NewExchange returns the exchanger of a codec setting for workers peers, over vectors of n
// values whose matrices are shape: raw fp32 with no header (4 bytes a value) for "", else a
// CodecExchange.
func NewExchange(setting string, shape compress.Shape, n, workers int, seed uint64, decay float32) (Exchanger, error) {
	if setting == "" {
		return rawExchange{}, nil
	}
	return NewShapedCodecExchange(setting, shape, n, workers, seed, decay)
}

// Name is the codec setting.
func (x *CodecExchange) Name() string { return x.setting.String() }

// Exchange encodes worker w's pseudo-gradient with error feedback and decodes it as the aggregator
// would.
func (x *CodecExchange) Exchange(w int, delta []float32) ([]float32, int, error) {
	if w < 0 || w >= len(x.residuals) {
		return nil, 0, fmt.Errorf("codec exchange: worker %d of %d", w, len(x.residuals))
	}
	msg, err := x.residuals[w].Encode(x.msgs[w][:0], delta)
	if err != nil {
		return nil, 0, err
	}
	x.msgs[w] = msg
	dec, err := x.decoders[w].Decode(x.decoded[w][:0], msg)
	if err != nil {
		return nil, 0, fmt.Errorf("decode: %w", err)
	}
	x.decoded[w] = dec
	return dec, len(msg), nil
}
