// Package peer is a cohort member's training process (`cohort join`): it joins a cohort with its
// contributors' data, and for every round the coordinators open it trains H inner steps from θ_t,
// sends each slice of its compressed pseudo-gradient (with error feedback) to that slice's
// aggregator over QUIC, fetches the aggregated slices, applies the outer step — staying
// bit-identical with every other replica — and reports a signed receipt.
//
// A peer never aggregates for others and never sees other peers' updates. It talks to the
// coordinators through Coordinators (ClientCoordinators over a member's client: consensus commands
// are signed envelopes, data plane messages are protocol messages on the same mutually
// authenticated QUIC connections).
//
// The package is a pure round state and a thin driver. The state (state, exchange, feedback)
// decides: whether to take part in a round (a participant, not seen yet; a finished cohort ends
// on its final model), whether θ must be re-synced, whether the steps taken ahead apply, which
// slices were accepted and by which aggregator (a moved slice is resent to the new one), whether
// the round is applied — every slice's aggregate fetched — or abandoned (the accepted uploads go
// back into the residual: error feedback loses nothing), whether a receipt is due (only when every
// slice was accepted), and the Report and Totals. It reads no clock and starts no goroutine. The
// driver (Peer) does the I/O and owns the goroutines; one round is, in outline:
//
//	c, rounds := co.NextRound(cohort, st.last)          // long-poll
//	verdict, r := st.next(c, rounds)                     // pollAgain, finish or takePart
//	if differs(hash(θ), r.ModelHash) { resync }          // co.Model
//	if st.stale(r) { dropAhead }
//	w.InnerSteps(st.owed()); Δ := w.Update(r.Number)
//	go w.InnerSteps(st.overlap(r))                       // τ steps while the update travels
//	x := newExchange(r)
//	for each slice i, in parallel: msg := fb.encode(Δ[s]); co.Upload(…); x.accepted(i, …)
//	                               (round.exchange: the answer may bring the aggregate)
//	for each slice i not answered, in parallel: co.Aggregate(x.fetchFrom(i)) until received, abandoned
//	                               or closed; on silence x.follow(i, roundNow) and resend
//	if x.complete() { w.OuterStep(agg); if x.receipt() { go co.Submit(receipt) } }
//	else { dropAhead; x.giveBack(fb) }
//	checkpoint; OnRound(st.report(…)); take st.stepsAhead(…) steps before the next round opens
package peer
