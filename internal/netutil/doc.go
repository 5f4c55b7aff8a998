// Package netutil has the small network helpers the simulations and tests share.
//
// A coordinator listens on one port number for both Raft (TCP) and QUIC (UDP). Listen binds
// both on 127.0.0.1 and hands the bound sockets over, to be passed to the coordinator
// (coordinator.Config.PacketConn and RaftListener) or to a child process (its ExtraFiles and
// `cohort coordinator --listen-fds`). Nothing is closed and bound again, so no other socket —
// in this process or another — can take the port in between:
//
//	socks, err := netutil.Listen()
//	...
//	cfg := coordinator.Config{Listen: socks.Addr(), PacketConn: socks.UDP, RaftListener: socks.TCP, ...}
package netutil
