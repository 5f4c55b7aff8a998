package netutil

import (
	"errors"
	"fmt"
	"net"
	"syscall"
)

// maxAttempts bounds the fresh TCP ports Listen tries before giving up: each attempt fails only
// when some other socket already holds UDP at the port the kernel gave TCP.
const maxAttempts = 64

// ErrNoPort is returned by Listen when no port could be bound for both TCP and UDP.
var ErrNoPort = errors.New("netutil: no port free for both TCP and UDP on 127.0.0.1")

// Sockets are a TCP listener and a UDP socket bound to the same 127.0.0.1 port.
type Sockets struct {
	TCP *net.TCPListener
	UDP *net.UDPConn
}

// Addr is the address both sockets are bound to, "127.0.0.1:PORT".
func (s Sockets) Addr() string { return s.UDP.LocalAddr().String() }

// Close closes both sockets.
func (s Sockets) Close() error { return errors.Join(s.TCP.Close(), s.UDP.Close()) }

// Listen binds TCP on 127.0.0.1:0, then UDP on the port the kernel chose. When that UDP port is
// taken it tries again with a fresh TCP port, holding the refused ones until it is done so the
// kernel cannot hand the same port back.
func Listen() (Sockets, error) { return listen(freshTCP) }

// freshTCP binds TCP on 127.0.0.1 at a port the kernel chooses.
func freshTCP() (*net.TCPListener, error) {
	return net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
}

// listen is Listen with the TCP binding given (tests hand it ports whose UDP is taken).
func listen(bindTCP func() (*net.TCPListener, error)) (Sockets, error) {
	var refused []net.Listener
	defer func() {
		for _, l := range refused {
			l.Close()
		}
	}()
	var last error
	for range maxAttempts {
		tl, err := bindTCP()
		if err != nil {
			return Sockets{}, fmt.Errorf("netutil: listen tcp: %w", err)
		}
		port := tl.Addr().(*net.TCPAddr).Port
		uc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port})
		if err == nil {
			return Sockets{TCP: tl, UDP: uc}, nil
		}
		refused = append(refused, tl)
		last = err
		if !errors.Is(err, syscall.EADDRINUSE) {
			break
		}
	}
	return Sockets{}, fmt.Errorf("%w: %w", ErrNoPort, last)
}

// ListenN returns n pairs from Listen, or closes those it bound and returns the error.
func ListenN(n int) ([]Sockets, error) {
	out := make([]Sockets, 0, n)
	for range n {
		s, err := Listen()
		if err != nil {
			for _, o := range out {
				o.Close()
			}
			return nil, err
		}
		out = append(out, s)
	}
	return out, nil
}
