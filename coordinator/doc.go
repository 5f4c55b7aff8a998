// Package coordinator is the coordinator service: one node of the Raft-replicated cluster that
// holds the community's state (package consensus), serving a client API over QUIC with mutual TLS
// (package transport).
//
// One address names a coordinator: the client API listens there on UDP (QUIC, ALPN cohort/1) and
// Raft on TCP, on the same port. New binds both at Config.Listen, or takes over the two sockets a
// supervisor already bound (Config.PacketConn and RaftListener: systemd socket activation, a test
// that bound port 0), which the Server then closes.
//
// Writes. A member signs each command with its ed25519 key (consensus.Envelope) and sends it with
// MsgSubmit to any coordinator. The envelope's issuer must be the key the QUIC connection was
// authenticated with, so a captured envelope replayed by somebody else is refused at the door;
// a follower forwards the envelope to the leader; the leader stamps its clock and applies it
// through Raft, where the state verifies the signature and applies each (issuer, request ID) once.
// Errors whose text starts with "unavailable:" (no leader, leadership lost, timeouts) leave the
// outcome unknown: a client (package client) retries the same envelope at the next coordinator, which is safe
// because of that exactly-once rule. Every other error is the state's final verdict.
//
// Reads. protocol.MsgQuery answers from the node's replica, or, with Linearizable, only on the leader after
// a Raft barrier.
//
// Cluster membership. Every node's key must be registered in the state (consensus
// AddCoordinator) before it can issue coordinator commands: the first leader of a fresh cluster
// registers itself; every other node sends MsgJoinCluster to the leader from its own listening
// socket with an envelope self-signed by its key, and the leader adds it as a Raft voter if needed
// and registers the key.
//
// Governance. While leader, a node tallies every open proposal whose voting deadline has passed;
// a passed proposal becomes a cohort (package consensus decides quorum, threshold and
// contributor-weighted votes).
//
// Rounds. On every tick each node keeps its replica of each cohort's θ in step with the rounds
// the state records (fetching every slice's aggregate, then the outer step); the leader gathers a
// round.View per cohort, pings the coordinators when the decision asks for it, and executes the
// round.Action it gets (a Raft write). An aggregator admits uploads to its slices and closes them
// by package round's rules (round.Slice), with one timer per slice. Every decision reads one
// clock, Config.Now.
package coordinator
