// Package netutil has the small network helpers the simulations and tests share.
package netutil

import (
	"errors"
	"net"
)

// FreeAddr returns a 127.0.0.1 address whose port is free for both TCP and UDP: a coordinator
// listens on both (Raft over TCP, QUIC over UDP) at the same port.
func FreeAddr() (string, error) {
	for i := 0; i < 100; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return "", err
		}
		a := l.Addr().String()
		u, err := net.ListenPacket("udp", a)
		l.Close()
		if err == nil {
			u.Close()
			return a, nil
		}
	}
	return "", errors.New("netutil: no port free for both TCP and UDP on 127.0.0.1")
}
