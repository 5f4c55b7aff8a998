package netutil

import (
	"net"
	"testing"
)

// TestFreeAddrDistinct: addresses handed out in one process never repeat, and each can be bound
// for both TCP and UDP — a coordinator listens on both at the same port.
func TestFreeAddrDistinct(t *testing.T) {
	addrs, err := FreeAddrs(64)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, a := range addrs {
		if seen[a] {
			t.Fatalf("address %s handed out twice", a)
		}
		seen[a] = true
	}
	for _, a := range addrs[:4] {
		l, err := net.Listen("tcp", a)
		if err != nil {
			t.Fatalf("tcp %s: %v", a, err)
		}
		u, err := net.ListenPacket("udp", a)
		if err != nil {
			t.Fatalf("udp %s: %v", a, err)
		}
		l.Close()
		u.Close()
	}
}
