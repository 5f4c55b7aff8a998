package main

import (
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"

	"github.com/cohortlab/cohort/internal/netutil"
)

// TestInheritSockets: --listen-fds takes over a bound UDP socket and a TCP listener, and refuses
// descriptors of the wrong kind, naming them.
func TestInheritSockets(t *testing.T) {
	sk, err := netutil.Listen()
	if err != nil {
		t.Fatal(err)
	}
	defer sk.Close()
	// rawFD is a descriptor of its own for a socket, as a child inherits it.
	rawFD := func(f *os.File, err error) int {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		fd, err := syscall.Dup(int(f.Fd()))
		if err != nil {
			t.Fatal(err)
		}
		return fd
	}
	pc, ln, err := inheritSockets(rawFD(sk.UDP.File()), rawFD(sk.TCP.File()))
	if err != nil {
		t.Fatal(err)
	}
	if pc.LocalAddr().String() != sk.Addr() || ln.Addr().String() != sk.Addr() {
		t.Fatalf("inherited %s (UDP) and %s (TCP), want %s", pc.LocalAddr(), ln.Addr(), sk.Addr())
	}
	pc.Close()
	ln.Close()

	// Each wrong pair names the descriptor of the wrong kind. inheritSockets closes both
	// descriptors it is given, taken or refused.
	udp, tcp := rawFD(sk.TCP.File()), rawFD(sk.TCP.File())
	if _, _, err := inheritSockets(udp, tcp); err == nil || !strings.Contains(err.Error(), fmt.Sprintf("--listen-fds: fd %d", udp)) {
		t.Errorf("a TCP listener as the UDP socket: %v, want a refusal naming fd %d", err, udp)
	}
	udp, tcp = rawFD(sk.UDP.File()), rawFD(sk.UDP.File())
	if _, _, err := inheritSockets(udp, tcp); err == nil || !strings.Contains(err.Error(), fmt.Sprintf("--listen-fds: fd %d", tcp)) {
		t.Errorf("a UDP socket as the TCP listener: %v, want a refusal naming fd %d", err, tcp)
	}
}
