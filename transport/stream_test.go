package transport

import (
	"bytes"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

func streamPair(t *testing.T, allow func(NodeID) error) (*StreamListener, *Identity) {
	t.Helper()
	id := testIdentity(t, 1)
	l, err := ListenStream("127.0.0.1:0", StreamConfig{Identity: id, Allow: allow, HandshakeTimeout: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l, id
}

func dialer(t *testing.T, seed byte) *StreamListener {
	t.Helper()
	l, err := ListenStream("127.0.0.1:0", StreamConfig{Identity: testIdentity(t, seed), Allow: func(NodeID) error { return nil }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

func TestStreamAdmitsOnlyAllowedKeys(t *testing.T) {
	friend, stranger := dialer(t, 2), dialer(t, 3)
	friendID := testIdentity(t, 2).NodeID()
	var mu sync.Mutex
	allowed := map[NodeID]bool{friendID: true}
	srv, srvID := streamPair(t, func(id NodeID) error {
		mu.Lock()
		defer mu.Unlock()
		if !allowed[id] {
			return errors.New("not a coordinator")
		}
		return nil
	})
	go func() {
		for {
			c, err := srv.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(c, c); c.Close() }()
		}
	}()
	// The friend gets through, both ways authenticated.
	c, err := friend.Dial(srv.Addr().String(), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if got := c.(*StreamConn).Peer(); got != srvID.NodeID() {
		t.Fatalf("dialled %s, want %s", got, srvID.NodeID())
	}
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(c, buf); err != nil || !bytes.Equal(buf, []byte("ping")) {
		t.Fatalf("echo %q, %v", buf, err)
	}
	// The stranger's handshake is refused: nothing it writes is echoed.
	if sc, err := stranger.Dial(srv.Addr().String(), time.Second); err == nil {
		sc.Write([]byte("ping"))
		sc.SetReadDeadline(time.Now().Add(time.Second))
		if n, err := sc.Read(buf); n > 0 || err == nil {
			t.Fatalf("a stranger's stream was served: %d bytes, %v", n, err)
		}
	}
	// A plain TCP client gets no stream either.
	raw, err := net.Dial("tcp", srv.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	raw.Write([]byte("\x00plain raft rpc"))
	raw.SetReadDeadline(time.Now().Add(2 * time.Second))
	if b, _ := io.ReadAll(raw); bytes.Contains(b, []byte("plain raft rpc")) {
		t.Fatal("plain TCP bytes were echoed")
	}
	raw.Close()
	// Revoking the friend and rechecking closes its open connection.
	mu.Lock()
	delete(allowed, friendID)
	mu.Unlock()
	if n := srv.Recheck(); n != 1 {
		t.Fatalf("Recheck closed %d connections, want 1", n)
	}
	c.SetReadDeadline(time.Now().Add(time.Second))
	if _, err := c.Read(buf); err == nil || isTimeout(err) {
		t.Fatalf("revoked connection still open: %v", err)
	}
}

// The dialling side checks the server's key too.
func TestStreamDialRefusesUnexpectedServer(t *testing.T) {
	srv, _ := streamPair(t, func(NodeID) error { return nil })
	go func() {
		for {
			c, err := srv.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	picky, err := ListenStream("127.0.0.1:0", StreamConfig{Identity: testIdentity(t, 5), Allow: func(NodeID) error { return errors.New("pinned elsewhere") }})
	if err != nil {
		t.Fatal(err)
	}
	defer picky.Close()
	if _, err := picky.Dial(srv.Addr().String(), time.Second); !errors.Is(err, ErrPeerNotAllowed) {
		t.Fatalf("dial to an unpinned server: %v, want ErrPeerNotAllowed", err)
	}
}

// Connections that never finish their handshake are closed after HandshakeTimeout, and past
// MaxPendingHandshakes new ones are closed at once; Accept is never held up by them.
func TestStreamStalledHandshakesAreBounded(t *testing.T) {
	id := testIdentity(t, 1)
	srv, err := ListenStream("127.0.0.1:0", StreamConfig{Identity: id, Allow: func(NodeID) error { return nil },
		HandshakeTimeout: 300 * time.Millisecond, MaxPendingHandshakes: 4})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := srv.Accept()
		if err == nil {
			accepted <- c
		}
	}()
	var stalled []net.Conn
	for i := 0; i < 20; i++ {
		c, err := net.Dial("tcp", srv.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		c.Write([]byte{0x16}) // the first byte of a ClientHello, and then nothing
		stalled = append(stalled, c)
	}
	// A real peer still gets in once the stalled ones time out.
	friend := dialer(t, 2)
	waitUntil(t, 3*time.Second, func() bool {
		c, err := friend.Dial(srv.Addr().String(), time.Second)
		if err != nil {
			return false
		}
		c.Close()
		return true
	})
	select {
	case c := <-accepted:
		c.Close()
	case <-time.After(2 * time.Second):
		t.Fatal("the real peer's connection was not accepted")
	}
	for _, c := range stalled {
		c.SetReadDeadline(time.Now().Add(time.Second))
		if _, err := c.Read(make([]byte, 1)); err == nil || isTimeout(err) {
			t.Fatalf("a stalled handshake is still open: %v", err)
		}
		c.Close()
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func waitUntil(t *testing.T, d time.Duration, f func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !f() {
		if time.Now().After(deadline) {
			t.Fatal("timed out")
		}
		time.Sleep(20 * time.Millisecond)
	}
}
