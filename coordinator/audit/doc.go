// Package audit measures what each contributor of a cohort was worth by retraining without it:
// the ground truth the ledger's shares can be held against.
//
// A game is n players (contributors, each with its data shard) and a value function over
// coalitions (Coalition, a bit set of players). The value of a coalition S is the final
// validation loss and accuracy of a model trained on the shards in S alone (Retrainer.Value: an
// in-process DiLoCo run, trainer.Run, with the cohort's codec, error feedback, inner AdamW and
// outer Nesterov step as spec.Of fixes them; the empty coalition is the initial model θ_0). A
// Retrainer takes its shards either from a data set split by a partition (NewRetrainer, a
// simulated cohort's) or as given (NewShardRetrainer: a finished cohort's contributors' own
// shards, validated on its coordinators' split, from θ_0's seed of its proposal). The
// utility the attributions share out is the loss reduction u(S) = loss(∅) − loss(S), so every
// attribution is positive when the player helps:
//
//   - leave-one-out: LOO_i = u(N) − u(N \ {i}) = loss(N \ {i}) − loss(N);
//   - Shapley: φ_i, the mean of u(S ∪ {i}) − u(S) over the orderings of the players. Exact
//     (every one of the 2^n coalitions, each evaluated once and cached) up to MaxAutoExact players
//     by default, and up to MaxExact on request; beyond, seeded permutation sampling with
//     truncation (Options.Tolerance), each value reported with its standard error. The same
//     seed gives the same values.
//
// Compare holds a Shapley vector against a share vector (the ledger's payouts per contributor):
// the Spearman rank correlation, the L1 distance between the two normalised to sum 1 (negative
// Shapley values clamped to 0 first: a contributor who hurt the model is owed nothing), and each
// contributor's share minus its normalised Shapley value (positive: over-paid).
//
// Retraining is itself noisy: the same coalition trained in another batch order ends on another
// model, and when contributors are worth nearly the same, one set of retrainings ranks them by
// that noise. RunRepeated solves the game again on retrainings in other batch orders
// (Retrainer.Repeat; the shards, θ_0 and the settings unchanged) and Combine averages the runs,
// with each value's standard error across them and the runs' Agreement with each other: the
// ground truth's own resolution, beside which a ledger's agreement with one run is to be read.
//
// Solve knows nothing of models: its tests use synthetic games (additive, symmetric, with a null
// player), and any value function can be audited.
package audit
