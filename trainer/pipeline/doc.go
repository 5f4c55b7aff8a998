// Package pipeline trains a GPT as a stage group: S stages, each a process (or a goroutine)
// holding consecutive blocks of one replica (nn.GPTStage), with micro-batches flowing forward as
// activations and backward as their gradients between consecutive stages, pipelined so the
// stages compute at once.
//
// # Schedules
//
// A Schedule (OneFOneB, GPipe) is a pure function from (stage, S, M) to the ordered forward and
// backward passes the stage runs in one step (Ops); Simulate plays the schedules of a group on an
// ideal link to give the makespan and each stage's utilisation. Every schedule runs the
// backwards in micro-batch order, so gradients accumulate in one order and every schedule
// trains to the same bits. 1F1B keeps at most S−s micro-batch inputs on stage s; GPipe keeps M.
//
// # A step
//
// Stage.Step runs one inner step over a Link (frames to and from the other stages, in order per
// pair of stages): the schedule's passes, each forward receiving its input from stage s−1 and
// sending its output to s+1, each backward receiving the output's gradient from s+1 and sending
// the input's gradient to s−1 (the last stage computes the loss and its gradient in one pass).
// Then:
//
//  1. the accumulated gradient is divided by M (the step's loss is the mean of the micro-batches'
//     mean losses: the whole batch's mean);
//  2. the tie: the head is wte, so the last stage holds a copy of wte; the first and the last
//     stage exchange their wte gradients (fp32, one V×D tensor each way) and both add first's +
//     last's, so both hold the same bits and, applying the same AdamW to the same state, their
//     copies stay bit-identical. The first stage owns the tensor (nn.Span.Tied marks the copy).
//     The alternative, computing the head on the first stage with the last stage's hidden states
//     sent around the ring, would add a round trip to every micro-batch and put the head's
//     product (the largest of a byte-level model) on the first stage mid-pipeline; the exchange
//     is two tensors per step, off the critical path;
//  3. the global norm: each stage's sum of squares (the tied copy not counted twice) travels
//     0 → 1 → … → S−1, added in stage order, and the total goes back with the step's loss from
//     the last stage to stage 0 and on to the middle stages, so every stage clips by the same
//     norm (trainer.ClipGradNorm's rule) and learns the loss;
//  4. AdamW (trainer.AdamW, ClipNorm done above) on the stage's own parameters and moments.
//
// With the same batches and AdamW, a group trains to the whole GPT's parameters: the same bits
// with one micro-batch, within float32 rounding of the micro-batch sums with several.
//
// # Frames
//
// A Frame is a 12-byte header (kind, step, micro-batch) and a payload: a compress message for
// tensors, two float64 for the norm frames. Activations and their gradients use the group's
// dense compress setting, "fp32" or "q8" with one scale per row of D values; the tie is always
// fp32. Codecs.MaxFrame bounds a frame from the model's shape, and a link refuses larger ones; a
// frame that does not parse or decode is ErrFrame, one the schedule does not expect ErrProtocol.
// StepStats counts the bytes sent and received by kind (the forward direction is Activation,
// the backward Gradient).
//
// # A group as a DiLoCo worker
//
// A Member is a stage as a DiLoCo member for the range of θ it owns (nn.GPTStage.Owned): θ_t of
// the range and its outer momentum, the range's pseudo-gradient, and trainer's Nesterov step on
// the range's aggregate, elementwise, so the members' ranges in stage order are the bits of a
// whole-model trainer.Worker's θ_{t+1}. The last stage's copy of wte takes the first stage's
// θ_{t+1} of wte after the outer step. A Group is S members over in-process links, one DiLoCo
// worker; RunDiLoCo runs a cohort of groups in process as trainer.Run runs whole-model workers
// (the same batches, weights and codec, each stage's range coded on its own with its own error
// feedback), and with one micro-batch trains to trainer.Run's bits.
//
// # Stages as processes
//
// RunProcess runs one stage of a group whose every stage is a process of its own (cohort stage),
// over a Link to the others; the S processes train what RunDiLoCo trains with one worker, the
// same bits, each holding only its slice. A round on stage s:
//
//	m.InnerSteps(ctx, link, H, next)            // with the group
//	agg := trainer.Average(Δ of the range)      // one worker: RunDiLoCo's bits
//	m.OuterStep(agg, tied)                      // the last takes θ_{t+1} of wte (a Theta frame)
//	hash: SHA-256 state from s−1, + θ range → s+1 (Hash frames; the last finishes it)
//	validation: forward only, chunk by chunk (Eval frames; the last scores)
//	checkpoint (StageCheckpoint, the latest two)
//
// Before the first round the stages pass their latest checkpointed round, the digest of their
// settings and the first stage's data digest along the group (Control frames, reduceNorm's
// path): every stage resumes after the smallest round, and a stage under other settings, or a
// last stage on other data than the first's, stops with ErrConfig. After the last round each
// stage says farewell to its neighbours (a Control frame each way), so every frame sent has
// been read before the links close.
//
// NewLocalGroup links stages in one process (tests, benchmarks); package quiclink links them
// over the transport's QUIC connections.
package pipeline
