package linkshape

import (
	"encoding/binary"
	"errors"
	"math"
	"net"
	"sync"
	"testing"
	"time"
)

func udp(t testing.TB) *net.UDPConn {
	t.Helper()
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	if err := pc.SetReadBuffer(8 << 20); err != nil {
		t.Log(err)
	}
	return pc
}

func shaped(t testing.TB, cfg Config) *Conn {
	t.Helper()
	c, err := Wrap(udp(t), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

type arrival struct {
	seq uint32
	at  time.Time
	n   int
}

// collect reads packets from pc until idle for quiet, recording sequence numbers.
func collect(pc net.PacketConn, quiet time.Duration) []arrival {
	var got []arrival
	buf := make([]byte, 2048)
	for {
		pc.SetReadDeadline(time.Now().Add(quiet))
		n, _, err := pc.ReadFrom(buf)
		if err != nil {
			return got
		}
		got = append(got, arrival{seq: binary.BigEndian.Uint32(buf), at: time.Now(), n: n})
	}
}

func send(t testing.TB, c net.PacketConn, to net.Addr, count, size int) time.Time {
	t.Helper()
	buf := make([]byte, size)
	start := time.Now()
	for i := range count {
		binary.BigEndian.PutUint32(buf, uint32(i))
		if _, err := c.WriteTo(buf, to); err != nil {
			t.Fatal(err)
		}
	}
	return start
}

func TestRateRespected(t *testing.T) {
	const (
		rate  = 8_000_000 // bit/s
		size  = 1172      // + 28 overhead = 1200 bytes on the link
		count = 1000      // 9.6 Mbit: 1.2 s
	)
	c := shaped(t, Config{Link: Link{Rate: rate}, QueueBytes: 2 << 20, Seed: 1})
	rx := udp(t)
	defer rx.Close()
	var got []arrival
	done := make(chan struct{})
	go func() { got = collect(rx, 500*time.Millisecond); close(done) }()
	start := send(t, c, rx.LocalAddr(), count, size)
	<-done
	if len(got) != count {
		t.Fatalf("received %d of %d packets", len(got), count)
	}
	elapsed := got[len(got)-1].at.Sub(start)
	measured := float64(count*(size+DefaultPacketOverhead)*8) / elapsed.Seconds()
	t.Logf("%d packets in %v: %.2f Mbit/s (set %.2f)", count, elapsed, measured/1e6, rate/1e6)
	if math.Abs(measured-rate)/rate > 0.15 {
		t.Fatalf("measured rate %.2f Mbit/s, want %.2f ± 15%%", measured/1e6, rate/1e6)
	}
	st := c.EgressStats()
	if st.OfferedPackets != count || st.DeliveredPackets != count || st.DroppedPackets != 0 || st.LostPackets != 0 {
		t.Fatalf("stats %+v", st)
	}
	if st.DeliveredBytes != count*size {
		t.Fatalf("delivered %d bytes, want %d", st.DeliveredBytes, count*size)
	}
}

func TestDelayAndJitterKeepOrder(t *testing.T) {
	const delay = 40 * time.Millisecond
	c := shaped(t, Config{Link: Link{Delay: delay, Jitter: 10 * time.Millisecond}, Seed: 2})
	rx := udp(t)
	defer rx.Close()
	var got []arrival
	done := make(chan struct{})
	go func() { got = collect(rx, 300*time.Millisecond); close(done) }()
	start := send(t, c, rx.LocalAddr(), 1, 100)
	time.Sleep(5 * time.Millisecond)
	send(t, c, rx.LocalAddr(), 200, 100)
	<-done
	if len(got) != 201 {
		t.Fatalf("received %d of 201 packets", len(got))
	}
	if d := got[0].at.Sub(start); d < delay-10*time.Millisecond {
		t.Fatalf("first packet after %v, want ≥ %v", d, delay-10*time.Millisecond)
	}
	for i := 2; i < len(got); i++ {
		if got[i].seq < got[i-1].seq {
			t.Fatalf("reordered: %d after %d", got[i].seq, got[i-1].seq)
		}
	}
}

func TestDelayAdded(t *testing.T) {
	const delay = 50 * time.Millisecond
	c := shaped(t, Config{Link: Link{Delay: delay}})
	rx := udp(t)
	defer rx.Close()
	for range 3 {
		start := send(t, c, rx.LocalAddr(), 1, 64)
		got := collect(rx, 500*time.Millisecond)
		if len(got) != 1 {
			t.Fatalf("received %d packets", len(got))
		}
		if d := got[0].at.Sub(start); d < delay {
			t.Fatalf("delivered after %v, want ≥ %v", d, delay)
		}
	}
}

func lossPattern(t *testing.T, seed uint64, loss float64, count int) (map[uint32]bool, Stats) {
	c := shaped(t, Config{Link: Link{Loss: loss}, Seed: seed})
	rx := udp(t)
	defer rx.Close()
	var got []arrival
	done := make(chan struct{})
	go func() { got = collect(rx, time.Second); close(done) }()
	buf := make([]byte, 64)
	for i := range count {
		binary.BigEndian.PutUint32(buf, uint32(i))
		c.WriteTo(buf, rx.LocalAddr())
		if i%200 == 0 {
			time.Sleep(time.Millisecond) // keep the receiver's socket buffer from overflowing
		}
	}
	// Wait for the delay line to drain (its goroutine may lag on a loaded machine).
	var st Stats
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if st = c.EgressStats(); st.DeliveredPackets+st.LostPackets == uint64(count) {
			break
		}
	}
	<-done
	set := make(map[uint32]bool, len(got))
	for _, a := range got {
		set[a.seq] = true
	}
	return set, st
}

func TestLossRateAndDeterminism(t *testing.T) {
	const count, loss = 4000, 0.1
	a, st := lossPattern(t, 7, loss, count)
	if st.OfferedPackets != count || st.LostPackets+st.DeliveredPackets != count {
		t.Fatalf("stats do not add up: %+v", st)
	}
	if uint64(len(a)) != st.DeliveredPackets {
		t.Fatalf("received %d packets, stats say %d delivered", len(a), st.DeliveredPackets)
	}
	// Binomial(4000, 0.1): sd ≈ 19; allow 5 sd.
	if got := float64(st.LostPackets); math.Abs(got-count*loss) > 95 {
		t.Fatalf("lost %v of %d packets, want about %v", got, count, count*loss)
	}
	b, _ := lossPattern(t, 7, loss, count)
	c, _ := lossPattern(t, 8, loss, count)
	if len(a) != len(b) {
		t.Fatalf("same seed, different loss counts %d, %d", len(a), len(b))
	}
	for s := range a {
		if !b[s] {
			t.Fatalf("same seed, packet %d delivered once and lost once", s)
		}
	}
	same := 0
	for s := range a {
		if c[s] {
			same++
		}
	}
	if same == len(a) && len(a) == len(c) {
		t.Fatal("different seeds gave the same loss pattern")
	}
}

func TestDropTail(t *testing.T) {
	// 1 Mbit/s with a 12 000-byte queue: a burst of 100 packets of 972+28 bytes keeps
	// the first 12 (plus the one being sent) and drops the rest. The link drains 1 packet
	// per 8 ms, so a sender descheduled mid-burst on a loaded machine gets a few more in.
	c := shaped(t, Config{Link: Link{Rate: 1e6}, QueueBytes: 12000})
	rx := udp(t)
	defer rx.Close()
	var got []arrival
	done := make(chan struct{})
	go func() { got = collect(rx, 300*time.Millisecond); close(done) }()
	send(t, c, rx.LocalAddr(), 100, 972)
	<-done
	st := c.EgressStats()
	if st.DroppedPackets < 50 || st.DroppedPackets > 88 || st.DroppedPackets+st.DeliveredPackets != 100 {
		t.Fatalf("stats %+v, want ~87 dropped", st)
	}
	if uint64(len(got)) != st.DeliveredPackets {
		t.Fatalf("received %d, delivered %d", len(got), st.DeliveredPackets)
	}
	for i, a := range got { // drop-tail keeps the head of the burst
		if a.seq != uint32(i) {
			t.Fatalf("packet %d has seq %d", i, a.seq)
		}
	}
}

func TestBothDirectionsAndDeadline(t *testing.T) {
	const delay = 30 * time.Millisecond
	c := shaped(t, Config{Link: Link{Delay: delay}, Direction: Both})
	peer := udp(t)
	defer peer.Close()
	// Read deadline in the past-ish: times out with a net.Error that says Timeout.
	c.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	_, _, err := c.ReadFrom(make([]byte, 10))
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("err = %v, want a timeout", err)
	}
	// A blocked ReadFrom wakes when the deadline moves earlier.
	c.SetReadDeadline(time.Time{})
	var wg sync.WaitGroup
	var blockedErr error
	wg.Go(func() { _, _, blockedErr = c.ReadFrom(make([]byte, 10)) })
	time.Sleep(20 * time.Millisecond)
	c.SetReadDeadline(time.Now())
	wg.Wait()
	if !errors.As(blockedErr, &ne) || !ne.Timeout() {
		t.Fatalf("blocked read: err = %v, want a timeout", blockedErr)
	}
	c.SetReadDeadline(time.Time{})

	// Ingress is delayed too.
	start := time.Now()
	if _, err := peer.WriteTo([]byte("hello"), c.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 10)
	n, from, err := c.ReadFrom(buf)
	if err != nil || string(buf[:n]) != "hello" || from.String() != peer.LocalAddr().String() {
		t.Fatalf("ReadFrom = %q from %v, %v", buf[:n], from, err)
	}
	if d := time.Since(start); d < delay {
		t.Fatalf("ingress packet arrived after %v, want ≥ %v", d, delay)
	}
	if st := c.IngressStats(); st.DeliveredPackets != 1 {
		t.Fatalf("ingress stats %+v", st)
	}
	// Close unblocks a reader.
	wg.Go(func() { _, _, blockedErr = c.ReadFrom(buf) })
	time.Sleep(10 * time.Millisecond)
	c.Close()
	wg.Wait()
	if !errors.Is(blockedErr, net.ErrClosed) {
		t.Fatalf("read after Close: %v", blockedErr)
	}
}

// TestQuicGoSeesPlainPacketConn guards the pitfalls: the wrapper must not expose
// ReadMsgUDP/WriteMsgUDP (quic-go would bypass the shaper) and must forward the buffer
// and syscall methods (quic-go sizes socket buffers through them).
func TestQuicGoSeesPlainPacketConn(t *testing.T) {
	var pc net.PacketConn = shaped(t, Config{})
	if _, ok := pc.(interface {
		ReadMsgUDP(b, oob []byte) (int, int, int, *net.UDPAddr, error)
	}); ok {
		t.Fatal("Conn exposes ReadMsgUDP")
	}
	if _, ok := pc.(interface {
		WriteMsgUDP(b, oob []byte, addr *net.UDPAddr) (int, int, error)
	}); ok {
		t.Fatal("Conn exposes WriteMsgUDP")
	}
	c := pc.(*Conn)
	if err := c.SetReadBuffer(1 << 20); err != nil {
		t.Fatal(err)
	}
	if err := c.SetWriteBuffer(1 << 20); err != nil {
		t.Fatal(err)
	}
	if _, err := c.SyscallConn(); err != nil {
		t.Fatal(err)
	}
}

func TestConfigValidate(t *testing.T) {
	bad := []Config{
		{Link: Link{Rate: -1}},
		{Link: Link{Loss: 1}},
		{Link: Link{Loss: math.NaN()}},
		{Direction: 5},
		{QueueBytes: -1},
	}
	for _, cfg := range bad {
		if err := cfg.Validate(); err == nil {
			t.Errorf("%+v validated", cfg)
		}
		if _, err := Wrap(nil, cfg); err == nil {
			t.Errorf("Wrap accepted %+v", cfg)
		}
	}
}

func TestWriteCopiesBuffer(t *testing.T) {
	c := shaped(t, Config{Link: Link{Delay: 30 * time.Millisecond}})
	rx := udp(t)
	defer rx.Close()
	buf := []byte("original")
	c.WriteTo(buf, rx.LocalAddr())
	copy(buf, "CLOBBERD") // quic-go reuses its buffers right after WriteTo
	rx.SetReadDeadline(time.Now().Add(time.Second))
	got := make([]byte, 20)
	n, _, err := rx.ReadFrom(got)
	if err != nil || string(got[:n]) != "original" {
		t.Fatalf("received %q, %v", got[:n], err)
	}
}
