// Package consensus is Cohort's replicated coordinator state: a deterministic state machine
// (State) holding members, proposals and votes, cohorts, rounds and the contribution ledger,
// replicated with hashicorp/raft (Node).
package consensus
