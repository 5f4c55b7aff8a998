// Package round holds the decisions of a training round, free of clocks, goroutines, locks and
// I/O: what the leader does next for a cohort (Next), when a slice takes an upload and when it
// closes (Slice), and the arithmetic of an aggregate (Aggregate, Downlink). Time is an argument.
//
// The coordinator gathers what a decision needs into a View — the cohort and its rounds as the
// replicated state records them, the replica's applied round and hash, the leadership, which
// coordinators answer a ping — asks for the Action, and executes it (a Raft write). A decision that
// needs to know which coordinators are live asks for them first (Check), so that pings run only
// when they matter and never inside this package:
//
//	for {
//		a := round.Next(v)
//		if a.Kind == round.Check {
//			v.Live, v.Distrusted, v.Checked = ping(v.Coordinators), distrusted(), true
//			continue
//		}
//		if a.LiveChecked {
//			lastCheck, suspects = v.Now, a.Suspects
//		}
//		if a.Kind == round.Extend {
//			extended = a.Round // asked once; back to 0 if the write fails
//		}
//		execute(a) // OpenRound, CloseRound, ExtendRound or Reassign commands
//		break
//	}
//
// An aggregator keeps one Slice per (round, slice) it aggregates and one timer for it:
//
//	err := sl.Admit(member, weight, vals, now, sv) // ErrLate, ErrHeld, ErrDuplicate
//	if closeNow, next := sl.Due(now, sv); closeNow { avg, n, err := sl.Finalize(cfg) ... } else { rearm(next) }
//
// The service answers a refused upload with the wire's error for it: ErrLate as protocol.ErrLate,
// ErrHeld as protocol.ErrUnavailable (resend), ErrDuplicate as protocol.ErrDuplicate.
//
// The aggregate a Slice finalizes to is coded for the way down with the aggregator's error
// feedback (Downlink, one compress.Residual per slice).
package round
