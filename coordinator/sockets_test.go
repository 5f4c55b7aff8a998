package coordinator

import (
	"errors"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/cohortlab/cohort/consensus"
	"github.com/cohortlab/cohort/internal/netutil"
)

// TestConfigBoundSockets: bound sockets come in pairs at one address, Listen may be left to them
// and must agree with them when given.
func TestConfigBoundSockets(t *testing.T) {
	a, b := bound(t), bound(t)
	port := func(s netutil.Sockets) string { return strconv.Itoa(s.UDP.LocalAddr().(*net.UDPAddr).Port) }
	id := testIdentity(t, "c1")
	for _, tc := range []struct {
		name   string
		listen string
		pc     net.PacketConn
		ln     net.Listener
		want   string // the address the node listens on; "" when Validate refuses
	}{
		{"listen alone", "127.0.0.1:7001", nil, nil, "127.0.0.1:7001"},
		{"sockets alone", "", a.UDP, a.TCP, a.Addr()},
		{"sockets and their address", a.Addr(), a.UDP, a.TCP, a.Addr()},
		{"UDP without TCP", "", a.UDP, nil, ""},
		{"TCP without UDP", a.Addr(), nil, a.TCP, ""},
		{"two ports", "", a.UDP, b.TCP, ""},
		{"another port than the sockets'", b.Addr(), a.UDP, a.TCP, ""},
		{"another IP than the sockets'", "127.0.0.2:" + port(a), a.UDP, a.TCP, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := Config{ID: "c1", InMemory: true, Listen: tc.listen, PacketConn: tc.pc, RaftListener: tc.ln, Identity: id,
				Peers: []consensus.Peer{{ID: "c1", Addr: "127.0.0.1:7001", Key: id.NodeID().String()}}}
			err := cfg.Validate()
			if tc.want == "" {
				if !errors.Is(err, ErrSockets) {
					t.Fatalf("Validate: %v, want ErrSockets", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got, _ := cfg.listenAddr(); got != tc.want {
				t.Fatalf("listens on %q, want %q", got, tc.want)
			}
		})
	}
}

// TestServerOwnsBoundSockets: a Server listens on the sockets it was given, takes its address
// from them, and closes them — on Close, and when New fails.
func TestServerOwnsBoundSockets(t *testing.T) {
	id := testIdentity(t, "c1")
	sk := bound(t)
	s, err := New(Config{ID: "c1", InMemory: true, PacketConn: sk.UDP, RaftListener: sk.TCP, Identity: id,
		Peers: []consensus.Peer{{ID: "c1", Addr: sk.Addr(), Key: id.NodeID().String()}}, Raft: fastRaft()})
	if err != nil {
		t.Fatal(err)
	}
	if s.Addr() != sk.Addr() {
		t.Fatalf("Addr %s, want the sockets' %s", s.Addr(), sk.Addr())
	}
	waitFor(t, 10*time.Second, "leader", s.Node().IsLeader)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	checkClosed(t, sk)

	// New fails (no peers, no join) after taking the sockets over: they are closed too.
	sk = bound(t)
	if _, err := New(Config{ID: "c1", InMemory: true, PacketConn: sk.UDP, RaftListener: sk.TCP, Identity: id}); err == nil {
		t.Fatal("New without peers or join succeeded")
	}
	checkClosed(t, sk)
}

func checkClosed(t *testing.T, sk netutil.Sockets) {
	t.Helper()
	sk.TCP.SetDeadline(time.Now().Add(time.Second)) // an open listener fails the test, not hangs it
	sk.UDP.SetReadDeadline(time.Now().Add(time.Second))
	if _, err := sk.TCP.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("raft listener %s still open: %v", sk.Addr(), err)
	}
	if _, _, err := sk.UDP.ReadFrom(make([]byte, 1)); !errors.Is(err, net.ErrClosed) {
		t.Errorf("QUIC socket %s still open: %v", sk.Addr(), err)
	}
}
