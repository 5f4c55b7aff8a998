package pipeline

import (
	"fmt"
	"strings"
)

// Schedule orders the forward and backward passes of a step's micro-batches on every stage.
type Schedule uint8

// Schedules. The zero value is OneFOneB.
const (
	// OneFOneB (PipeDream-flush's 1F1B): stage s runs min(S−1−s, M) forwards to fill the pipe,
	// then alternates one forward and one backward, then drains the remaining backwards. A stage
	// holds at most S−s micro-batches' inputs at once.
	OneFOneB Schedule = iota
	// GPipe runs every forward, then every backward: a stage holds all M inputs at once.
	GPipe
)

// String is the schedule's name: "1f1b" or "gpipe".
func (k Schedule) String() string {
	switch k {
	case OneFOneB:
		return "1f1b"
	case GPipe:
		return "gpipe"
	}
	return fmt.Sprintf("Schedule(%d)", uint8(k))
}

// ParseSchedule parses "1f1b" or "gpipe" (case-insensitive); "" is 1f1b.
func ParseSchedule(s string) (Schedule, error) {
	switch strings.ToLower(s) {
	case "", "1f1b":
		return OneFOneB, nil
	case "gpipe":
		return GPipe, nil
	}
	return 0, fmt.Errorf("%w: schedule %q, want 1f1b or gpipe", ErrConfig, s)
}

// Op is one pass of one micro-batch on one stage.
type Op struct {
	Backward bool
	Micro    int
}

func (o Op) String() string {
	if o.Backward {
		return fmt.Sprintf("B%d", o.Micro)
	}
	return fmt.Sprintf("F%d", o.Micro)
}

// Ops is what stage runs in one step of micro micro-batches, in order. On the last stage a
// micro-batch's forward and backward are one run of its loss graph, so its ops alternate
// F0 B0 F1 B1 … under every schedule. Every schedule runs the backwards in micro-batch order, so
// gradients accumulate in the same order (and to the same bits) whatever the schedule.
func (k Schedule) Ops(stage, stages, micro int) ([]Op, error) {
	if stages < 1 || stage < 0 || stage >= stages || micro < 1 {
		return nil, fmt.Errorf("%w: stage %d of %d with %d micro-batches", ErrConfig, stage, stages, micro)
	}
	ops := make([]Op, 0, 2*micro)
	fwd := func(m int) { ops = append(ops, Op{Micro: m}) }
	bwd := func(m int) { ops = append(ops, Op{Backward: true, Micro: m}) }
	if stage == stages-1 {
		for m := 0; m < micro; m++ {
			fwd(m)
			bwd(m)
		}
		return ops, nil
	}
	switch k {
	case GPipe:
		for m := 0; m < micro; m++ {
			fwd(m)
		}
		for m := 0; m < micro; m++ {
			bwd(m)
		}
	case OneFOneB:
		warm := min(stages-1-stage, micro)
		for m := 0; m < warm; m++ {
			fwd(m)
		}
		for m := 0; m < micro-warm; m++ {
			fwd(warm + m)
			bwd(m)
		}
		for m := micro - warm; m < micro; m++ {
			bwd(m)
		}
	default:
		return nil, fmt.Errorf("%w: unknown schedule %v", ErrConfig, k)
	}
	return ops, nil
}

// Timeline is a simulated step: when every op of every stage starts and ends.
type Timeline struct {
	Start, End [][]float64 // [stage][op index]
	Makespan   float64
	Busy       []float64 // time each stage computes
}

// Utilisation is stage s's busy time over the makespan.
func (t Timeline) Utilisation(s int) float64 {
	if t.Makespan == 0 {
		return 0
	}
	return t.Busy[s] / t.Makespan
}

// Simulate runs k's ops for stages stages and micro micro-batches on an ideal link (no transfer
// time): a forward on stage s costs fwd[s] and waits for stage s−1's forward of the micro-batch,
// a backward costs bwd[s] and waits for stage s+1's backward of it (the last stage's forward
// costs fwd+bwd, its backward nothing). It reports an error if the ops can deadlock.
func Simulate(k Schedule, stages, micro int, fwd, bwd []float64) (Timeline, error) {
	if len(fwd) != stages || len(bwd) != stages {
		return Timeline{}, fmt.Errorf("%w: %d forward and %d backward costs for %d stages", ErrConfig, len(fwd), len(bwd), stages)
	}
	ops := make([][]Op, stages)
	for s := range ops {
		var err error
		if ops[s], err = k.Ops(s, stages, micro); err != nil {
			return Timeline{}, err
		}
	}
	tl := Timeline{Start: make([][]float64, stages), End: make([][]float64, stages), Busy: make([]float64, stages)}
	fDone := make([][]float64, stages) // when stage s finished micro-batch m's forward (−1: not yet)
	bDone := make([][]float64, stages)
	for s := range ops {
		tl.Start[s] = make([]float64, len(ops[s]))
		tl.End[s] = make([]float64, len(ops[s]))
		fDone[s], bDone[s] = make([]float64, micro), make([]float64, micro)
		for m := 0; m < micro; m++ {
			fDone[s][m], bDone[s][m] = -1, -1
		}
	}
	next := make([]int, stages)
	clock := make([]float64, stages)
	for remaining := 2 * micro * stages; remaining > 0; {
		progressed := false
		for s := 0; s < stages; s++ {
			for next[s] < len(ops[s]) {
				op := ops[s][next[s]]
				ready, cost := clock[s], 0.0
				switch {
				case !op.Backward:
					if s > 0 {
						if fDone[s-1][op.Micro] < 0 {
							goto blocked
						}
						ready = max(ready, fDone[s-1][op.Micro])
					}
					cost = fwd[s]
					if s == stages-1 {
						cost += bwd[s]
					}
				default:
					if fDone[s][op.Micro] < 0 {
						goto blocked
					}
					if s < stages-1 {
						if bDone[s+1][op.Micro] < 0 {
							goto blocked
						}
						ready = max(ready, bDone[s+1][op.Micro])
						cost = bwd[s]
					}
				}
				tl.Start[s][next[s]], tl.End[s][next[s]] = ready, ready+cost
				clock[s] = ready + cost
				tl.Busy[s] += cost
				if op.Backward {
					bDone[s][op.Micro] = clock[s]
				} else {
					fDone[s][op.Micro] = clock[s]
				}
				next[s]++
				remaining--
				progressed = true
			}
		blocked:
		}
		if !progressed && remaining > 0 {
			return Timeline{}, fmt.Errorf("%w: schedule %v deadlocks with %d stages and %d micro-batches", ErrConfig, k, stages, micro)
		}
	}
	for _, c := range clock {
		tl.Makespan = max(tl.Makespan, c)
	}
	return tl, nil
}
