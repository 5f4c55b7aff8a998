// Package netutil has the small network helpers the simulations and tests share.
package netutil

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"sync"
)

// Ports are picked below the kernel's ephemeral range (32768–60999 on Linux), so a client
// socket — a QUIC dialer, a raft TCP connection, in this or any other process — cannot take the
// port between the check here and the server's bind.
const (
	portLo = 20000
	portHi = 32000
)

var (
	mu     sync.Mutex
	handed = map[int]bool{}
)

// FreeAddr returns a 127.0.0.1 address whose port is free for both TCP and UDP: a coordinator
// listens on both (Raft over TCP, QUIC over UDP) at the same port. A process never gets the same
// port twice, so addresses handed out for one cluster are distinct even before anything binds
// them. Ports come from outside the ephemeral range, in random order, so that test packages
// running side by side rarely probe the same one.
func FreeAddr() (string, error) {
	mu.Lock()
	defer mu.Unlock()
	for i := 0; i < 1000; i++ {
		p := portLo + rand.IntN(portHi-portLo)
		if handed[p] {
			continue
		}
		a := fmt.Sprintf("127.0.0.1:%d", p)
		l, err := net.Listen("tcp", a)
		if err != nil {
			continue
		}
		u, err := net.ListenPacket("udp", a)
		l.Close()
		if err != nil {
			continue
		}
		u.Close()
		handed[p] = true
		return a, nil
	}
	return "", errors.New("netutil: no port free for both TCP and UDP on 127.0.0.1 in 20000–32000")
}

// FreeAddrs returns n distinct addresses from FreeAddr.
func FreeAddrs(n int) ([]string, error) {
	out := make([]string, 0, n)
	for i := 0; i < n; i++ {
		a, err := FreeAddr()
		if err != nil {
			return nil, err
		}
		out = append(out, a)
	}
	return out, nil
}
