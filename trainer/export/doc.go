// Package export maps a Cohort model's flat parameter vector to PyTorch state-dict tensors and
// back, and writes them as a safetensors file with the model's provenance.
//
// Two kinds of model are mapped, told apart by their layout's names:
//
//   - The MLP ("mlp:784-256-10", layout "fc{i}.w" [in, out], "fc{i}.b" [out]) becomes the state
//     dict of nn.Sequential(nn.Linear, nn.ReLU(), nn.Linear, ...): "{2i}.weight" [out, in] (the
//     weight transposed) and "{2i}.bias".
//   - The GPT ("gpt:L-D-NH-T", byte vocabulary 256, or "gpt:L-D-NH-T-v<Vocab>"; nanoGPT's parameter names with Linear weights
//     as [in, out]) becomes nanoGPT's state dict: every 2-D Linear weight transposed to [out, in],
//     the embeddings and LayerNorm parameters as they are, and lm_head.weight, tied to
//     transformer.wte.weight, written as a second copy of it. Cohort's GPT uses the tanh
//     approximation of GELU where nanoGPT uses the exact one: the weights load with strict=True
//     and the outputs agree to a few decimal places, not bit for bit.
//
// Import is the reverse and is strict, like load_state_dict(strict=True): the spec comes from the
// file's metadata, every expected name must be present with its exact shape, nothing else may be,
// values must be finite, and lm_head.weight must equal transformer.wte.weight.
//
// Provenance (spec, cohort, round, model hash) travels in the safetensors metadata as "cohort.spec",
// "cohort.cohort", "cohort.round", "cohort.model_hash" (hex), and as a small JSON file beside it.
//
//	b, err := export.Export(export.Provenance{Spec: "mlp:784-256-10", Cohort: 1, Round: 40, ModelHash: h}, layout, theta)
//	p, theta, err := export.Import(b, safetensors.Limits{})
package export
