package coordinator

import (
	"errors"
	"fmt"
	"net"

	"github.com/cohortlab/cohort/transport"
)

// ErrSockets is returned (wrapped) by Validate when Config.PacketConn and Config.RaftListener do
// not make one address, or disagree with Config.Listen.
var ErrSockets = errors.New("coordinator: bound sockets")

// listenAddr is the address the node listens on: Listen, or with bound sockets and an empty
// Listen, theirs. It checks that the sockets, if any, come together, share one address, and
// agree with Listen when both are given.
func (c *Config) listenAddr() (string, error) {
	if (c.PacketConn == nil) != (c.RaftListener == nil) {
		return "", fmt.Errorf("%w: give PacketConn and RaftListener together: QUIC and Raft share one port", ErrSockets)
	}
	if c.PacketConn == nil {
		return c.Listen, nil
	}
	udp, tcp := c.PacketConn.LocalAddr().String(), c.RaftListener.Addr().String()
	uh, up, err1 := net.SplitHostPort(udp)
	th, tp, err2 := net.SplitHostPort(tcp)
	if err := errors.Join(err1, err2); err != nil {
		return "", fmt.Errorf("%w: %w", ErrSockets, err)
	}
	if uh != th || up != tp {
		return "", fmt.Errorf("%w: UDP bound to %s and TCP to %s: want one address", ErrSockets, udp, tcp)
	}
	if c.Listen == "" {
		return udp, nil
	}
	lh, lp, err := net.SplitHostPort(c.Listen)
	if err != nil {
		return c.Listen, nil // Validate reports the malformed address
	}
	ip := net.ParseIP(uh)
	if lp != up || (ip != nil && !ip.IsUnspecified() && !ip.Equal(net.ParseIP(lh))) {
		return "", fmt.Errorf("%w: --listen %s, but the sockets given are bound to %s", ErrSockets, c.Listen, udp)
	}
	return c.Listen, nil
}

// closeSockets closes the bound sockets the Config holds (the Server owns them).
func (c *Config) closeSockets() {
	if c.PacketConn != nil {
		c.PacketConn.Close()
	}
	if c.RaftListener != nil {
		c.RaftListener.Close()
	}
}

// listenQUIC serves the client API on PacketConn, or on a UDP socket bound at Listen.
func (c *Config) listenQUIC(tc transport.Config) (*transport.Endpoint, error) {
	if c.PacketConn != nil {
		return transport.Listen(c.PacketConn, tc)
	}
	return transport.ListenAddr(c.Listen, tc)
}

// listenRaft serves Raft's authenticated stream layer on RaftListener, or on a TCP listener bound
// at Listen.
func (c *Config) listenRaft(sc transport.StreamConfig) (*transport.StreamListener, error) {
	if c.RaftListener != nil {
		return transport.NewStreamListener(c.RaftListener, sc)
	}
	return transport.ListenStream(c.Listen, sc)
}
