// Package linkshape runs real traffic over a slow, lossy link inside one process: Conn
// wraps a net.PacketConn (a *net.UDPConn) and passes every written packet through
//
//	random loss (PCG, seeded) → drop-tail queue drained at Rate → delay line (Delay ± Jitter)
//
// before the wrapped conn sends it. With Direction Both, read packets take the same path
// with an independent random stream. A Link is written "10mbit,50ms,1%" (see ParseLink).
//
//	l, err := linkshape.ParseLink("10mbit,50ms,1%")
//	pc, _ := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
//	sc, err := linkshape.Wrap(pc, linkshape.Config{Link: l, Seed: 1})
//	ep, err := transport.Listen(sc, cfg) // quic-go over the shaped socket
//
// Shaping egress on both endpoints of a connection gives a symmetric link: 50 ms each way
// is a 100 ms round trip. Loss and jitter decisions are deterministic given the seed and
// the order of packets; delivery follows the wall clock (a goroutine-driven delay line
// with a timer), so timings vary by the scheduler's wake-up latency (well under a ms on an
// idle machine). Rate counts PacketOverhead (IPv4 + UDP headers by default) per packet,
// as a real link would.
//
// Pitfalls this package avoids, measured with quic-go v0.65: a wrapper that embeds
// *net.UDPConn exposes ReadMsgUDP/WriteMsgUDP and quic-go type-asserts to them, bypassing
// the shaper; a wrapper without SetReadBuffer/SetWriteBuffer/SyscallConn leaves quic-go
// with small socket buffers; and quic-go reuses the buffer passed to WriteTo, so the
// shaper copies it before queueing.
//
// The same specs drive `tc netem` across network namespaces for the kernel's view, e.g.
// `tc qdisc add dev veth0 root netem rate 10mbit delay 50ms loss 1%`.
package linkshape
