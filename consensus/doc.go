// Package consensus is Cohort's replicated coordinator state: a deterministic state machine
// (State) holding members, proposals and votes, cohorts, rounds and the contribution ledger,
// replicated by hashicorp/raft (Node). It imports no other Cohort package and knows nothing of
// QUIC or models; the coordinator service builds its API on Node and State.
//
// # Contract
//
//   - State.Apply(Command) (Result, error) is pure: no clock, randomness, goroutines or I/O. Every
//     replica that applies the same commands in order holds the same state, and the same Hash
//     (SHA-256 of the canonical snapshot bytes). All amounts are integers.
//   - A Command is a log entry: the leader's time stamp (unix ms, made monotone by the state) and a
//     client's signed Envelope {Version, Type, Issuer, RequestID, Body, Sig}. Bodies are msgpack
//     (vmihailenco/msgpack/v5, structs as arrays); the signature is ed25519 over
//     Envelope.SigningBytes() (a domain prefix + the envelope minus its signature).
//   - Group commit: a log entry is a Command or a Batch of them (batch.go): the byte 0xc1, then
//     [BatchVersion, Leader, Items], each item an envelope with its own time stamp; at most
//     MaxListLen items and MaxBatchBytes. The state applies the items in order exactly as if each
//     were an entry of its own, and each has its own Result or error (DecodeEntry reads both
//     kinds).
//   - Identity: a member or coordinator node is an ed25519 key; its ID is IDOf(pub), hex of the
//     first 16 bytes of SHA-256(pub). Member commands (Register, Propose, Vote, Join, Receipt) must
//     be signed by the member's registered key (Register by the key it registers). Coordinator
//     commands (AddCoordinator, Tally, OpenRound, ScoreCommit, CloseRound, Reassign, ExtendRound)
//     must be signed by a coordinator node key registered in the state, and so must the operator
//     commands (SetLimits, Fund, Grant: the operators' decisions, CommandType.IsOperator). The very first AddCoordinator, while the state
//     has none, is self-signed by the key it adds; Node accepts it only through the separate path
//     Node.BootstrapCoordinator (Node.Apply refuses it with ErrForbidden), which the coordinator
//     service calls with its own key and never for a client. Later coordinators are added with
//     Apply, signed by a registered coordinator. Unsigned, forged,
//     unknown-issuer or wrong-role commands are rejected (ErrUnsigned, ErrBadSignature,
//     ErrUnknownIssuer, ErrForbidden).
//   - Exactly once: (Issuer, RequestID) is applied at most once. A retry of an applied request
//     returns the cached Result with Duplicate set, across leader changes and restarts (the table
//     is part of the snapshot). The table keeps the DedupeWindow (256) highest request IDs per
//     issuer; older IDs get ErrStaleRequest. A rejected command changes nothing and is not
//     remembered, so its retry is judged again. Clients number new requests increasingly (Signer).
//   - Times: votes are accepted while stamp < deadline; Tally at stamp >= deadline; receipts while
//     stamp <= round deadline. Deadlines are absolute unix ms (a proposal's is stamp +
//     VotingPeriodMs; a round's is chosen by the leader in OpenRound).
//   - Limits: the state holds the cluster's Limits (SetLimits; zero fields are the documented
//     defaults) and refuses with ErrLimit, naming the limit and the value, what would pass one: a
//     model spec counting too many parameters, layers or width (ParseModel), too many rounds or
//     inner steps, too long a vote, too big a pool, too low a quorum or threshold, too many open
//     proposals (in all, per member), members, contributors per member or members in a cohort.
//     Names people read (member, contributor, proposal, coordinator) are printable UTF-8 of at
//     most MaxShortNameLen bytes.
//   - Voting: a member's vote weight is its contributors' earned balances plus the weight
//     operators granted it (Grant); a fresh key weighs 0 and can neither propose nor vote. Passed
//     when len(votes) > 0, the eligible weight (all members) is > 0, voted weight >= QuorumBP of it
//     and yes weight >= ThresholdBP of the voted weight; expired when nobody voted; rejected
//     otherwise, with the reason recorded. Weights are evaluated at tally time.
//   - Treasury: reward pools are not minted. Operators Fund the treasury; an open proposal
//     reserves its pool in it (the pool must fit the unreserved balance) and a passed proposal
//     takes it for its cohort's pool. Everything ever funded bounds every ledger sum, and with the
//     granted weight every vote weight sum, within 64 bits.
//   - Rounds: OpenRound numbers rounds 1, 2, ... with the previous one closed; round t+1's model
//     hash must equal the hash CloseRound recorded for round t; slices are contiguous ranges from 0
//     assigned to registered coordinators. The cohort is done when its last round closes.
//   - Ledger: ScoreCommit(cohort, round) applies to a closed round only, is idempotent per round,
//     and rounds are scored in increasing order. A receipt counts at most State.SampleCap samples. The round's budget is pool/rounds for every round since the last scored
//     one, plus the carry of unpaid budgets, plus pool mod rounds on the last round. DataShareBP
//     (80 %) goes by data weights and the rest by compute weights, each with Allocate (largest
//     remainder, ties to the smaller contributor name), so payouts sum exactly to the part's budget;
//     a part whose weights are all zero carries over. Once the last round is scored with someone
//     earning, the pool is paid out exactly.
//   - Snapshots: MarshalSnapshot writes magic, the msgpack of every collection as a slice sorted by
//     key, and a SHA-256 checksum; UnmarshalSnapshot rejects truncated or corrupt bytes
//     (ErrSnapshot). Every decoder of outside bytes (DecodeEnvelope, DecodeCommand,
//     DecodeBatch, Envelope.DecodeBody, UnmarshalSnapshot) returns an error, never panics, and is
//     fuzzed. Decode
//     envelopes from the network with DecodeEnvelope, not msgpack.Unmarshal: msgpack/v5.4.1
//     preallocates whatever length the input declares, and these decoders bound it first.
//
// # Using a Node (the coordinator's main loop)
//
//	node, err := consensus.NewNode(consensus.Config{
//		ID: "c1", Dir: "./c1", BindAddr: "127.0.0.1:7001",
//		Peers: []consensus.Peer{{ID: "c1", Addr: "127.0.0.1:7001"}, {ID: "c2", Addr: "127.0.0.1:7002"},
//			{ID: "c3", Addr: "127.0.0.1:7003"}},
//	})
//	defer node.Shutdown()
//
//	// Once, on the first leader: register this node's key (self-signed), then the others' keys.
//	signer, _ := consensus.NewSigner(nodeKey, uint64(time.Now().UnixNano()))
//	env, _ := signer.Sign(&consensus.AddCoordinatorBody{PublicKey: signer.PublicKey(), Name: "c1"})
//	res, err := node.Apply(ctx, env)
//
//	// Serving a client's signed envelope:
//	res, err = node.Apply(ctx, clientEnv)
//	var nl *consensus.NotLeaderError
//	switch {
//	case errors.As(err, &nl): // answer with nl.LeaderAddr; the client resends the same envelope there
//	case errors.Is(err, consensus.ErrLeadershipLost), errors.Is(err, context.DeadlineExceeded):
//		// outcome unknown: resend the same envelope (same request ID) to the leader
//	case err != nil: // the state rejected it: errors.Is(err, consensus.ErrDeadline), ...
//	}
//
//	// Reads: Barrier on the leader for a linearizable read, then View (copies out).
//	_ = node.Barrier(ctx)
//	_ = node.View(func(s *consensus.State) error { ledger = s.Ledger(); return nil })
//
// Writes go to the leader only; Node.Apply on a follower returns a *NotLeaderError (errors.Is
// ErrNotLeader) with the leader's ID and address. Node uses raft-boltdb/v2 (Dir/raft.db) for the
// log and stable store, file snapshots in Dir/snapshots, TCP by default (Config.Transport injects
// any raft.Transport), group commit (the leader keeps one entry of client commands in flight and
// appends the commands that queued meanwhile as one Batch entry, so concurrent Applies share an
// entry, a disk write and an RPC; Node.ApplyCounts and Stats count entries and commands),
// BatchApplyCh and MaxAppendEntries 1024, and a batching FSM that verifies the signatures of the
// entries it is handed in parallel before applying them in order (same outcome as verifying one
// by one). Membership: AddVoter/RemoveServer
// on the leader.
//
// # Figures (this 2-core machine, shared with other builds: load average 8–17 while measured)
//
//	go test -run '^$' -bench 'LedgerWritesTCP|ReplicationTCP|StateApply' -benchtime 10000x ./consensus/
//	go test -run '^$' -bench Failover -benchtime 3x ./consensus/
//
// Signed writes on 3 TCP nodes cost ~330 CPU-µs each (three ed25519 verifications, ~80–95 µs each
// here, are ~65 % of it); the same pipeline without signature work costs ~70–95 CPU-µs. Leader
// failover (shutdown to the next accepted write) takes ~1.7–3.3 s with raft's default timeouts,
// ~1.0–1.1 s with the Node defaults and ~0.3–0.5 s with 150 ms timeouts. The numbers measured for
// the report are in the benchmarks' output; rerun them on the target machine.
//
// # Queries
//
// State.Members, Member, Coordinators, Proposals, Proposal, Cohorts, Cohort, Rounds, Round,
// Ledger, Balance, LastRequestID, Clock, Hash (cached between changes), Limits, Treasury,
// SampleCap, VoteWeight; State.Verify checks an envelope's signature against
// the current state without applying it (to refuse forged commands before they reach the log).
// All return copies.
package consensus
