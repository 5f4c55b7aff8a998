package trainer

import (
	"fmt"
	"math"
	"math/rand/v2"

	"github.com/cohortlab/cohort/datasets"
	"github.com/cohortlab/cohort/trainer/nn"
)

// ImageSource draws classification batches from a shard of an image set: one seeded shuffle per
// epoch, batches taken in order, wrapping into the next epoch.
type ImageSource struct {
	imgs  *datasets.Images
	idx   []int
	order []int
	pos   int
	rng   *rand.Rand
	wrong map[int]int // sample → the wrong label it carries (WithLabelNoise)
}

// NewImageSource returns a source over the samples idx of imgs.
func NewImageSource(imgs *datasets.Images, idx []int, seed uint64) (*ImageSource, error) {
	if len(idx) == 0 {
		return nil, fmt.Errorf("image source: empty shard")
	}
	for _, i := range idx {
		if i < 0 || i >= imgs.Len() {
			return nil, fmt.Errorf("image source: sample %d out of range [0,%d)", i, imgs.Len())
		}
	}
	s := &ImageSource{imgs: imgs, idx: idx, order: append([]int(nil), idx...), rng: rand.New(rand.NewPCG(seed, 0x636f686f7274))}
	s.shuffle()
	return s, nil
}

func (s *ImageSource) shuffle() {
	s.rng.Shuffle(len(s.order), func(i, j int) { s.order[i], s.order[j] = s.order[j], s.order[i] })
	s.pos = 0
}

// Len is the number of samples in the shard.
func (s *ImageSource) Len() int { return len(s.idx) }

// WithLabelNoise gives a fraction frac of the shard's samples (rounded; chosen by seed) a wrong
// label, drawn uniformly from the other classes of [0, classes): a shard with noisy labels, as
// a careless contributor would hold. The same samples carry the same wrong labels in every epoch.
func (s *ImageSource) WithLabelNoise(frac float64, classes int, seed uint64) error {
	if !(frac >= 0 && frac <= 1) || classes < 2 {
		return fmt.Errorf("image source: label noise %v over %d classes: want a fraction in [0,1] and ≥ 2 classes", frac, classes)
	}
	n := int(math.Round(frac * float64(len(s.idx))))
	if n == 0 {
		return nil
	}
	r := rand.New(rand.NewPCG(seed, 0x6e6f697379))
	pick := append([]int(nil), s.idx...)
	r.Shuffle(len(pick), func(i, j int) { pick[i], pick[j] = pick[j], pick[i] })
	s.wrong = make(map[int]int, n)
	for _, i := range pick[:n] {
		y := int(s.imgs.Labels[i])
		w := r.IntN(classes - 1)
		if w >= y {
			w++
		}
		s.wrong[i] = w
	}
	return nil
}

// Next fills b with n samples.
func (s *ImageSource) Next(b *nn.Batch, n int) {
	pick := make([]int, n)
	for i := range pick {
		if s.pos == len(s.order) {
			s.shuffle()
		}
		pick[i] = s.order[s.pos]
		s.pos++
	}
	ImageBatch(b, s.imgs, pick)
	for k, i := range pick {
		if w, ok := s.wrong[i]; ok {
			b.Y[k] = w
		}
	}
}

// ImageBatch fills b with the samples idx of imgs: pixels scaled to [0,1], labels as ints.
func ImageBatch(b *nn.Batch, imgs *datasets.Images, idx []int) {
	f := imgs.Rows * imgs.Cols
	b.X = growFloats(b.X, len(idx)*f)
	if cap(b.Y) < len(idx) {
		b.Y = make([]int, len(idx))
	}
	b.Y = b.Y[:len(idx)]
	b.Tokens = b.Tokens[:0]
	for k, i := range idx {
		px := imgs.Pixels[i*f : (i+1)*f]
		row := b.X[k*f : (k+1)*f]
		for j, p := range px {
			row[j] = float32(p) / 255
		}
		b.Y[k] = int(imgs.Labels[i])
	}
}

// TextSource draws language-model batches from a token stream: windows of Context+1 tokens at
// seeded uniformly random offsets; inputs are the first Context tokens, targets the next ones.
type TextSource struct {
	tokens  []int
	context int
	pcg     *rand.PCG
	rng     *rand.Rand
}

// NewTextSource returns a source over tokens for a model with the given context length.
func NewTextSource(tokens []int, context int, seed uint64) (*TextSource, error) {
	if context <= 0 {
		return nil, fmt.Errorf("text source: context %d must be positive", context)
	}
	if len(tokens) < context+1 {
		return nil, fmt.Errorf("text source: shard has %d tokens, need at least %d", len(tokens), context+1)
	}
	pcg := rand.NewPCG(seed, 0x636f686f7274)
	return &TextSource{tokens: tokens, context: context, pcg: pcg, rng: rand.New(pcg)}, nil
}

// MarshalBinary is the source's position: the state of its random offsets (a checkpoint's).
func (s *TextSource) MarshalBinary() ([]byte, error) { return s.pcg.MarshalBinary() }

// UnmarshalBinary restores a position MarshalBinary returned: the next batches are the ones that
// followed it.
func (s *TextSource) UnmarshalBinary(b []byte) error {
	if err := s.pcg.UnmarshalBinary(b); err != nil {
		return fmt.Errorf("text source: position: %w", err)
	}
	return nil
}

// Len is the number of distinct windows in the shard.
func (s *TextSource) Len() int { return len(s.tokens) - s.context }

// Next fills b with n windows.
func (s *TextSource) Next(b *nn.Batch, n int) {
	starts := make([]int, n)
	for i := range starts {
		starts[i] = s.rng.IntN(len(s.tokens) - s.context)
	}
	TextBatch(b, s.tokens, s.context, starts)
}

// TextBatch fills b with the windows of tokens starting at starts.
func TextBatch(b *nn.Batch, tokens []int, context int, starts []int) {
	n := len(starts) * context
	if cap(b.Tokens) < n {
		b.Tokens = make([]int, n)
	}
	if cap(b.Y) < n {
		b.Y = make([]int, n)
	}
	b.Tokens, b.Y, b.X = b.Tokens[:n], b.Y[:n], b.X[:0]
	for k, st := range starts {
		copy(b.Tokens[k*context:(k+1)*context], tokens[st:st+context])
		copy(b.Y[k*context:(k+1)*context], tokens[st+1:st+1+context])
	}
}
