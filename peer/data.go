package peer

import (
	"errors"
	"fmt"
	"math"

	"github.com/cohortlab/cohort/datasets"
	"github.com/cohortlab/cohort/trainer"
	"github.com/cohortlab/cohort/trainer/nn"
)

// ErrDataMismatch is wrapped by the errors of a member's data the cohort's model cannot train on
// (ImagesFit): the peer refuses to join with it rather than commit the join and fail every round.
var ErrDataMismatch = errors.New("data does not fit the model")

// classifier is a model that takes feature vectors and predicts one of Classes labels (nn.MLP).
type classifier interface {
	Features() int
	Classes() int
}

// ImagesFit reports (nil) whether the cohort's model can train on imgs: a classifier taking
// Rows×Cols features whose classes cover every label in imgs. The error, wrapping
// ErrDataMismatch, states the shape found and the shape the model needs.
func ImagesFit(model nn.Model, imgs *datasets.Images) error {
	c, ok := model.(classifier)
	if !ok {
		return fmt.Errorf("%w: %s does not take images (it trains on text), these are %dx%d images", ErrDataMismatch, model.Name(), imgs.Rows, imgs.Cols)
	}
	if f := imgs.Features(); f != c.Features() {
		return fmt.Errorf("%w: %dx%d images (%d features), the model %s takes %s", ErrDataMismatch, imgs.Rows, imgs.Cols, f, model.Name(), featureShape(c.Features()))
	}
	top := -1
	for _, l := range imgs.Labels {
		top = max(top, int(l))
	}
	if top >= c.Classes() {
		return fmt.Errorf("%w: labels up to %d, the model %s has %d classes (labels 0 to %d)", ErrDataMismatch, top, model.Name(), c.Classes(), c.Classes()-1)
	}
	return nil
}

// featureShape describes n input features, as an image size when n is a square.
func featureShape(n int) string {
	if r := int(math.Sqrt(float64(n))); r*r == n {
		return fmt.Sprintf("%dx%d images (%d features)", r, r, n)
	}
	return fmt.Sprintf("%d features per sample", n)
}

// languageModel is a model that takes windows of Context tokens out of Vocab (nn.GPT, nn.CharLM).
type languageModel interface {
	Context() int
	Vocab() int
}

// ByteVocab is the vocabulary of a byte-level language model: a text shard's tokens are its
// bytes.
const ByteVocab = 256

// TextFits reports (nil) whether the cohort's model can train on a text shard of size bytes: a
// byte-level language model (vocabulary ByteVocab) and a shard of at least one window, Context+1
// bytes. The error, wrapping ErrDataMismatch, states what the model takes and what the shard
// holds.
func TextFits(model nn.Model, size int) error {
	lm, ok := model.(languageModel)
	if !ok {
		return fmt.Errorf("%w: %s does not take text (it trains on images), this is %d bytes of text", ErrDataMismatch, model.Name(), size)
	}
	if lm.Vocab() != ByteVocab {
		return fmt.Errorf("%w: %s is a language model over %d tokens, not bytes: text shards train byte-level models (vocabulary %d)",
			ErrDataMismatch, model.Name(), lm.Vocab(), ByteVocab)
	}
	if size < lm.Context()+1 {
		return fmt.Errorf("%w: %d bytes of text, the model %s needs at least %d (one window of its context %d plus the next byte)",
			ErrDataMismatch, size, model.Name(), lm.Context()+1, lm.Context())
	}
	return nil
}

// TextSamples is the number of samples a text shard of size bytes registers for a language model
// with context T: its non-overlapping windows, size/T (the training samples a text task counts).
func TextSamples(size, context int) uint64 {
	if context <= 0 || size <= 0 {
		return 0
	}
	return uint64(size / context)
}

// TextShard is one contributor's text: the documents of a text shard (datasets.LoadTexts).
type TextShard struct {
	// Contributor owns the text.
	Contributor string
	// Path names the shard in errors (the file or directory it was loaded from).
	Path string
	// Docs are its documents, in the order they train.
	Docs []datasets.Document
}

// Size is the shard's bytes.
func (s TextShard) Size() int {
	n := 0
	for _, d := range s.Docs {
		n += len(d.Text)
	}
	return n
}

// BindText returns a Config.Bind for text shards: for the cohort's model it checks every shard
// (TextFits; the error names the shard's Path), registers each contributor with the fingerprint
// of its text (datasets.TextFingerprint) and its TextSamples, and draws batches (seeded) from the
// whole text of all shards, concatenated in order. The whole text trains: the 90/10 split of a
// text task is the proposal's validation text, held by the coordinators, not a member's shard.
func BindText(shards []TextShard, seed uint64) func(model nn.Model) (trainer.Source, []Contributor, error) {
	return func(model nn.Model) (trainer.Source, []Contributor, error) {
		if len(shards) == 0 {
			return nil, nil, fmt.Errorf("%w: no text shards", ErrDataMismatch)
		}
		var text []byte
		var contributors []Contributor
		for _, s := range shards {
			size := s.Size()
			if err := TextFits(model, size); err != nil {
				return nil, nil, fmt.Errorf("%s: %w", s.Path, err)
			}
			fp := datasets.TextFingerprint(s.Docs)
			contributors = append(contributors, Contributor{Name: s.Contributor, Fingerprint: fp.Digest[:],
				Samples: TextSamples(size, model.(languageModel).Context())})
			for _, d := range s.Docs {
				text = append(text, d.Text...)
			}
		}
		src, err := trainer.NewByteSource(text, model.(languageModel).Context(), seed)
		if err != nil {
			return nil, nil, fmt.Errorf("%w: %w", ErrDataMismatch, err)
		}
		return src, contributors, nil
	}
}
