package peer

import "github.com/cohortlab/cohort/trainer"

// Worker is the model side a peer drives through a round: the DiLoCo steps of the
// trainer.Worker the peer builds from the cohort's proposal. Config.Worker may wrap it (a
// simulation's planted peer changes its updates); the peer reads θ, the momentum and the optimizer
// state for checkpoints from the trainer.Worker itself.
type Worker interface {
	// InnerSteps takes h AdamW steps from the local parameters (trainer.Worker.InnerSteps).
	InnerSteps(h int) (trainer.InnerStats, error)
	// Update returns the update this peer sends for round: the pseudo-gradient Δ = θ_t − θ_local
	// (trainer.Worker.PseudoGradient).
	Update(round uint32) []float32
	// MarkSent, OuterStep, OuterStepCarry, Discard and Reset are trainer.Worker's.
	MarkSent()
	OuterStep(aggregate []float32) error
	OuterStepCarry(aggregate []float32) error
	Discard()
	Reset(theta, momentum []float32) error
}

// replica is a trainer.Worker as a peer's Worker.
type replica struct{ *trainer.Worker }

func (r replica) Update(uint32) []float32 { return r.PseudoGradient(nil) }
