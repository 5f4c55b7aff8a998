package netutil

import (
	"errors"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestListenHoldsBothSockets: the pair is bound — TCP and UDP at one 127.0.0.1 port — and stays
// bound: nobody else can bind either, and each carries traffic.
func TestListenHoldsBothSockets(t *testing.T) {
	s, err := Listen()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if !strings.HasPrefix(s.Addr(), "127.0.0.1:") || s.TCP.Addr().String() != s.Addr() {
		t.Fatalf("tcp %s, udp %s: want one 127.0.0.1 address", s.TCP.Addr(), s.Addr())
	}
	if l, err := net.Listen("tcp", s.Addr()); err == nil {
		l.Close()
		t.Fatalf("tcp %s bound twice", s.Addr())
	}
	if u, err := net.ListenPacket("udp", s.Addr()); err == nil {
		u.Close()
		t.Fatalf("udp %s bound twice", s.Addr())
	}
	c, err := net.Dial("tcp", s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	a, err := s.TCP.Accept()
	if err != nil {
		t.Fatal(err)
	}
	a.Close()
	u, err := net.Dial("udp", s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	if _, err := u.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 8)
	n, _, err := s.UDP.ReadFrom(b)
	if err != nil || string(b[:n]) != "ping" {
		t.Fatalf("udp read %q, %v", b[:n], err)
	}
}

// TestListenNDistinct: pairs held at once have distinct ports.
func TestListenNDistinct(t *testing.T) {
	ss, err := ListenN(32)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, s := range ss {
		if seen[s.Addr()] {
			t.Fatalf("address %s handed out twice", s.Addr())
		}
		seen[s.Addr()] = true
	}
	for _, s := range ss {
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

// squatter hands out TCP listeners whose UDP port another socket holds: the first n, then
// fresh ones. Close releases the UDP sockets.
type squatter struct {
	n     int
	udp   []*net.UDPConn
	given []*net.TCPListener
}

func (s *squatter) bind() (*net.TCPListener, error) {
	if len(s.given) >= s.n {
		return freshTCP()
	}
	for {
		u, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			return nil, err
		}
		s.udp = append(s.udp, u)
		l, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: u.LocalAddr().(*net.UDPAddr).Port})
		if err != nil {
			continue // TCP is taken at that port too: squat another
		}
		s.given = append(s.given, l)
		return l, nil
	}
}

func (s *squatter) Close() {
	for _, u := range s.udp {
		u.Close()
	}
}

// checkReleased fails unless every TCP listener the squatter gave is closed.
func (s *squatter) checkReleased(t *testing.T) {
	t.Helper()
	for _, l := range s.given {
		l.SetDeadline(time.Now().Add(time.Second)) // an open listener fails the test, not hangs it
		if _, err := l.Accept(); !errors.Is(err, net.ErrClosed) {
			t.Fatalf("refused TCP listener %s left open (accept: %v)", l.Addr(), err)
		}
	}
}

// TestListenSkipsTakenUDP: when another socket holds UDP at the port TCP got, Listen releases
// that TCP port and takes another; when that keeps happening it gives up with ErrNoPort. It never
// returns a pair missing one half, nor keeps a TCP port it refused.
func TestListenSkipsTakenUDP(t *testing.T) {
	sq := &squatter{n: 3}
	defer sq.Close()
	s, err := listen(sq.bind)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if len(sq.given) != 3 {
		t.Fatalf("%d squatted ports tried, want 3", len(sq.given))
	}
	for _, l := range sq.given {
		if l.Addr().String() == s.Addr() {
			t.Fatalf("listen returned %s, whose UDP port another socket holds", s.Addr())
		}
	}
	sq.checkReleased(t)

	always := &squatter{n: maxAttempts + 1}
	defer always.Close()
	if _, err := listen(always.bind); !errors.Is(err, ErrNoPort) || !errors.Is(err, syscall.EADDRINUSE) {
		t.Fatalf("every UDP port taken: %v, want ErrNoPort wrapping EADDRINUSE", err)
	}
	if len(always.given) != maxAttempts {
		t.Fatalf("%d ports tried, want %d", len(always.given), maxAttempts)
	}
	always.checkReleased(t)
}
