// Package trainer is the peer side of Cohort: it trains a local model on local data and takes part
// in the DiLoCo outer loop.
//
// The loop, for round t with global parameters θ_t:
//
//  1. every participant starts from θ_t (the replicas are bit-identical; ParamsHash compares them);
//  2. H inner steps of AdamW on local batches give θ_i; the pseudo-gradient is Δ_i = θ_t − θ_i;
//  3. the Δ_i are exchanged (compressed, with error feedback — see package compress) and averaged,
//     weighted by samples consumed, in a fixed order (Average);
//  4. every replica applies the same outer Nesterov step (η = 0.7, μ = 0.9 by default) to θ_t.
//
// Worker exposes those steps without owning goroutines (the etcd RawNode shape): the caller drives
// InnerSteps, PseudoGradient and OuterStep, so the same code runs in-process (Run, `cohort train`)
// and across the network. Models live in trainer/nn behind nn.Model; gorgonia is confined there.
//
// Run is the in-process harness behind `cohort train`: K workers, no network, DiLoCo or the
// synchronous data-parallel baseline (ModeDDP) on the same data and the same total samples.
//
// Determinism: seeds are explicit (model init, partition, batch order); optimizers run float32
// arithmetic in a fixed order; the same seed and data give bit-identical parameters.
package trainer
