package nn

import (
	"fmt"
	"strings"
)

// NewFromName builds the model a name such as "mlp:784-256-10" or "charlm:v96-t64-d64-h128" or
// "gpt:4-128-4-64" describes (the names Model.Name returns), with the given batch size (0 for the model's default)
// and seed.
func NewFromName(name string, batch int, seed uint64) (Model, error) {
	switch {
	case strings.HasPrefix(name, "mlp:"):
		sizes, err := ParseMLPName(name)
		if err != nil {
			return nil, err
		}
		return NewMLP(MLPConfig{Sizes: sizes, Batch: batch, Seed: seed})
	case strings.HasPrefix(name, "charlm:"):
		cfg, err := ParseCharLMName(name)
		if err != nil {
			return nil, err
		}
		cfg.Batch, cfg.Seed = batch, seed
		return NewCharLM(cfg)
	case strings.HasPrefix(name, "gpt:"):
		cfg, err := ParseGPTName(name)
		if err != nil {
			return nil, err
		}
		cfg.Batch, cfg.Seed = batch, seed
		return NewGPT(cfg)
	}
	return nil, fmt.Errorf("%w: unknown model %q, want mlp:<sizes>, charlm:v<vocab>-t<context>-d<embed>-h<hidden> or gpt:<layers>-<embed>-<heads>-<context>", ErrConfig, name)
}
