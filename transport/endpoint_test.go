package transport

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"math/big"
	"math/rand/v2"
	"net"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
)

func testCtx(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// testServer listens on loopback with identity seed and returns the endpoint.
func testServer(t testing.TB, id *Identity, allow func(NodeID) error) *Endpoint {
	t.Helper()
	e, err := ListenAddr("127.0.0.1:0", Config{Identity: id, Allow: allow})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	return e
}

func TestConfigValidate(t *testing.T) {
	id := testIdentity(t, 1)
	cases := []struct {
		name string
		cfg  Config
		want string
	}{
		{"ok-zero", Config{Identity: id}, ""},
		{"no-identity", Config{}, "Identity"},
		{"neg-handshake", Config{Identity: id, HandshakeTimeout: -1}, "HandshakeTimeout"},
		{"neg-idle", Config{Identity: id, IdleTimeout: -1}, "IdleTimeout"},
		{"neg-streams", Config{Identity: id, MaxIncomingStreams: -1}, "MaxIncomingStreams"},
		{"neg-requests", Config{Identity: id, MaxConcurrentRequests: -1}, "MaxConcurrentRequests"},
		{"neg-request-timeout", Config{Identity: id, RequestTimeout: -time.Second}, "RequestTimeout"},
		{"neg-rate", Config{Identity: id, MinRate: -1}, "MinRate"},
		{"neg-serving", Config{Identity: id, MaxServing: -1}, "MaxServing"},
		{"per-source-above-all", Config{Identity: id, MaxServing: 10, MaxServingPerSource: 11}, "MaxServingPerSource"},
		{"no-conn-limits", Config{Identity: id, MaxConnsPerKey: -1, MaxConnsPerSource: -1}, ""},
		{"neg-payload", Config{Identity: id, MaxPayload: -1}, "MaxPayload"},
		{"stream-window", Config{Identity: id, InitialStreamWindow: 8 << 20, MaxStreamWindow: 1 << 20}, "InitialStreamWindow"},
		{"conn-window", Config{Identity: id, InitialConnWindow: 8 << 20, MaxConnWindow: 1 << 20}, "InitialConnWindow"},
		{"initial-above-default-max", Config{Identity: id, InitialStreamWindow: 64 << 20}, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			if tc.want == "" {
				if err != nil {
					t.Fatalf("unexpected error %v", err)
				}
				return
			}
			if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want ErrConfig naming %s", err, tc.want)
			}
		})
	}
}

func TestMutualTLSNodeIDs(t *testing.T) {
	srvID, cliID := testIdentity(t, 1), testIdentity(t, 2)
	srv := testServer(t, srvID, nil)
	ctx := testCtx(t, 10*time.Second)

	accepted := make(chan *Conn, 1)
	go func() {
		c, err := srv.Accept(ctx)
		if err != nil {
			t.Error(err)
			close(accepted)
			return
		}
		accepted <- c
	}()
	cli, err := Dial(ctx, srv.Addr().String(), Config{Identity: cliID})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	if cli.Peer() != srvID.NodeID() {
		t.Fatalf("client sees peer %s, want %s", cli.Peer(), srvID.NodeID())
	}
	if !cli.PeerKey().Equal(srvID.PublicKey()) {
		t.Fatal("client sees the wrong server key")
	}
	sc := <-accepted
	if sc == nil {
		t.FailNow()
	}
	if sc.Peer() != cliID.NodeID() {
		t.Fatalf("server sees peer %s, want %s", sc.Peer(), cliID.NodeID())
	}
	// A stream works both ways.
	st, err := cli.OpenStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	st.Close()
	ss, err := sc.AcceptStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(ss)
	if err != nil || string(got) != "ping" {
		t.Fatalf("server read %q, %v", got, err)
	}
}

func TestDialNode(t *testing.T) {
	srvID := testIdentity(t, 1)
	srv := testServer(t, srvID, nil)
	ctx := testCtx(t, 10*time.Second)
	go func() {
		for {
			if _, err := srv.Accept(ctx); err != nil {
				return
			}
		}
	}()
	cliEP, err := NewEndpoint(mustUDP(t), Config{Identity: testIdentity(t, 2)})
	if err != nil {
		t.Fatal(err)
	}
	defer cliEP.Close()
	c, err := cliEP.DialNode(ctx, srv.Addr().String(), srvID.NodeID())
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	_, err = cliEP.DialNode(ctx, srv.Addr().String(), testIdentity(t, 7).NodeID())
	if !errors.Is(err, ErrUnexpectedPeer) {
		t.Fatalf("err = %v, want ErrUnexpectedPeer", err)
	}
}

func mustUDP(t testing.TB) net.PacketConn {
	t.Helper()
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	return pc
}

// rawDial dials srv with a hand-made TLS config (to present bad or no certificates).
func rawDial(ctx context.Context, t *testing.T, addr string, certs []tls.Certificate) error {
	conf := &tls.Config{
		Certificates:       certs,
		InsecureSkipVerify: true,
		NextProtos:         []string{ALPN},
		MinVersion:         tls.VersionTLS13,
	}
	qc, err := quic.DialAddr(ctx, addr, conf, &quic.Config{HandshakeIdleTimeout: 3 * time.Second})
	if err != nil {
		return err
	}
	defer qc.CloseWithError(0, "")
	// With TLS 1.3 the client may finish its side before the server rejects its certificate:
	// the refusal then shows up as the connection being closed. A connection still open
	// after 2 s was accepted.
	wctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	select {
	case <-qc.Context().Done():
		return context.Cause(qc.Context())
	case <-wctx.Done():
		return nil
	}
}

func ecdsaCert(t *testing.T) tls.Certificate {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.NewChaCha8([32]byte{3}))
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "ecdsa"},
		NotBefore:    time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC),
		NotAfter:     time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC),
	}
	der, err := x509.CreateCertificate(rand.NewChaCha8([32]byte{4}), tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

func TestMutualTLSRefusals(t *testing.T) {
	srvID := testIdentity(t, 1)
	banned := testIdentity(t, 66)
	srv := testServer(t, srvID, func(id NodeID) error {
		if id == banned.NodeID() {
			return fmt.Errorf("node %s is banned", id)
		}
		return nil
	})
	ctx := testCtx(t, 20*time.Second)
	acceptedPeers := make(chan NodeID, 10)
	go func() {
		for {
			c, err := srv.Accept(ctx)
			if err != nil {
				return
			}
			acceptedPeers <- c.Peer()
		}
	}()
	addr := srv.Addr().String()

	if err := rawDial(ctx, t, addr, nil); err == nil {
		t.Error("client without a certificate was accepted")
	}
	if err := rawDial(ctx, t, addr, []tls.Certificate{ecdsaCert(t)}); err == nil {
		t.Error("client with an ECDSA certificate was accepted")
	}
	if c, err := Dial(ctx, addr, Config{Identity: banned}); err == nil {
		// The refusal may arrive after the client's handshake completes.
		if _, err := c.AcceptStream(ctx); err == nil {
			t.Error("banned node was accepted")
		}
		c.Close()
	}
	// A permitted node still gets in, and it is the only one the server accepted.
	good := testIdentity(t, 2)
	c, err := Dial(ctx, addr, Config{Identity: good})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	select {
	case id := <-acceptedPeers:
		if id != good.NodeID() {
			t.Fatalf("server accepted %s, want only %s", id, good.NodeID())
		}
	case <-ctx.Done():
		t.Fatal("good client not accepted")
	}

	// Client-side Allow refuses a server.
	_, err = Dial(ctx, addr, Config{Identity: good, Allow: func(id NodeID) error {
		return errors.New("not my coordinator")
	}})
	if !errors.Is(err, ErrPeerNotAllowed) {
		t.Fatalf("client-side Allow: err = %v, want ErrPeerNotAllowed", err)
	}
}

func TestVerifyPeerRejects(t *testing.T) {
	id := testIdentity(t, 1)
	other := testIdentity(t, 2)
	tampered := append([]byte(nil), id.Certificate()...)
	tampered[len(tampered)-1] ^= 1 // flip a signature bit
	cases := []struct {
		name string
		raw  [][]byte
		want error
	}{
		{"none", nil, ErrNoPeerCert},
		{"chain", [][]byte{id.Certificate(), other.Certificate()}, ErrPeerCert},
		{"garbage", [][]byte{{1, 2, 3}}, ErrPeerCert},
		{"ecdsa", [][]byte{ecdsaCert(t).Certificate[0]}, ErrPeerCert},
		{"bad-signature", [][]byte{tampered}, ErrPeerCert},
	}
	for _, tc := range cases {
		if _, err := verifyPeer(tc.raw); !errors.Is(err, tc.want) {
			t.Errorf("%s: err = %v, want %v", tc.name, err, tc.want)
		}
	}
}

// sizeConn records the largest datagram written through it. It forwards SyscallConn, which
// quic-go needs to set the DF bit (without it there is no path-MTU discovery to turn off).
type sizeConn struct {
	net.PacketConn
	mu      sync.Mutex
	largest int
}

func (c *sizeConn) SyscallConn() (syscall.RawConn, error) {
	return c.PacketConn.(*net.UDPConn).SyscallConn()
}

func (c *sizeConn) SetReadBuffer(n int) error  { return c.PacketConn.(*net.UDPConn).SetReadBuffer(n) }
func (c *sizeConn) SetWriteBuffer(n int) error { return c.PacketConn.(*net.UDPConn).SetWriteBuffer(n) }

func (c *sizeConn) WriteTo(p []byte, addr net.Addr) (int, error) {
	c.mu.Lock()
	c.largest = max(c.largest, len(p))
	c.mu.Unlock()
	return c.PacketConn.WriteTo(p, addr)
}

func (c *sizeConn) max() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.largest
}

// TestFixedPacketSize: with FixedPacketSize an endpoint sends no datagram above 1,280 bytes
// however much it sends; without it, path-MTU discovery probes loopback with larger ones.
func TestFixedPacketSize(t *testing.T) {
	for _, tc := range []struct {
		fixed bool
		check func(largest int) bool
		want  string
	}{
		{true, func(n int) bool { return n <= 1280 }, "at most 1280"},
		{false, func(n int) bool { return n > 1280 }, "above 1280 (path-MTU probes)"},
	} {
		t.Run(fmt.Sprintf("fixed=%v", tc.fixed), func(t *testing.T) {
			mux := NewMux()
			mux.Handle("sink", func(context.Context, NodeID, Message) (Message, error) {
				return Message{Header: Header{Type: "sink"}}, nil
			}, Limit{MaxPayload: 1 << 20})
			srv := testServer(t, testIdentity(t, 1), nil)
			ctx := testCtx(t, 20*time.Second)
			go srv.Serve(ctx, mux)
			udp, err := net.ListenPacket("udp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			pc := &sizeConn{PacketConn: udp}
			t.Cleanup(func() { udp.Close() })
			cl, err := NewEndpoint(pc, Config{Identity: testIdentity(t, 2), FixedPacketSize: tc.fixed})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { cl.Close() })
			c, err := cl.Dial(ctx, srv.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			// Enough round trips for discovery to probe (one every 5 RTTs while sending).
			for range 50 {
				if _, err := Call(ctx, c, Message{Header: Header{Type: "sink"}, Payload: make([]byte, 64<<10)}); err != nil {
					t.Fatal(err)
				}
			}
			if n := pc.max(); !tc.check(n) {
				t.Fatalf("largest datagram %d bytes, want %s", n, tc.want)
			}
		})
	}
}
