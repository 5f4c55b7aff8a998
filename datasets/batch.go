package datasets

import (
	"fmt"
	"slices"
)

const streamBatch = 0xba7c_0003

// Batcher deals a shard's sample indices in mini-batches of a fixed size.
// Each epoch is a fresh permutation of the indices drawn from (seed, epoch),
// so every index appears exactly once per epoch; a batch that reaches the
// end of an epoch continues into the next. The sequence depends only on
// (indices, size, seed), and (Epoch, Pos) is enough to resume it (Seek).
//
//	b, _ := datasets.NewBatcher(parts[me], 64, seed)
//	for step := range steps {
//		batch = b.Next(batch[:0])
//		x = train.AppendFeatures(x[:0], batch)
//		y = train.AppendLabels(y[:0], batch)
//	}
type Batcher struct {
	idx   []int
	size  int
	seed  uint64
	epoch uint64
	pos   int
	perm  []int
}

// NewBatcher returns a Batcher over a copy of idx. size must be ≥ 1 and idx
// non-empty.
func NewBatcher(idx []int, size int, seed uint64) (*Batcher, error) {
	if size < 1 || len(idx) == 0 {
		return nil, fmt.Errorf("%w: batcher: batch size %d over %d samples", ErrInvalidArgument, size, len(idx))
	}
	b := &Batcher{idx: slices.Clone(idx), size: size, seed: seed}
	b.shuffle()
	return b, nil
}

func (b *Batcher) shuffle() {
	b.perm = append(b.perm[:0], b.idx...)
	newRNG(b.seed, streamBatch^b.epoch).shuffle(b.perm)
}

// Next appends the next batch (size indices) to dst and returns it.
func (b *Batcher) Next(dst []int) []int {
	for need := b.size; need > 0; {
		n := min(need, len(b.perm)-b.pos)
		dst = append(dst, b.perm[b.pos:b.pos+n]...)
		b.pos += n
		need -= n
		if b.pos == len(b.perm) {
			b.epoch++
			b.pos = 0
			b.shuffle()
		}
	}
	return dst
}

// Epoch returns the current epoch (0 first).
func (b *Batcher) Epoch() uint64 { return b.epoch }

// Pos returns how many indices of the current epoch have been dealt.
func (b *Batcher) Pos() int { return b.pos }

// Seek moves to position pos of epoch, as reported by Epoch and Pos.
func (b *Batcher) Seek(epoch uint64, pos int) error {
	if pos < 0 || pos >= len(b.idx) {
		return fmt.Errorf("%w: batcher: position %d outside [0,%d)", ErrInvalidArgument, pos, len(b.idx))
	}
	b.epoch, b.pos = epoch, pos
	b.shuffle()
	return nil
}
