package linkshape

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Direction selects which traffic a Conn shapes.
type Direction int

const (
	// Egress shapes only packets written by this Conn. Shaping egress on both endpoints
	// gives a symmetric link (each side's Link describes its upstream).
	Egress Direction = iota
	// Both shapes written packets and, with an independent random stream, read packets
	// too: one shaped endpoint then sees the Link in both directions.
	Both
)

// DefaultPacketOverhead is the per-packet header size (IPv4 20 + UDP 8) counted against
// the rate when Config.PacketOverhead is zero.
const DefaultPacketOverhead = 28

// Config configures a shaped Conn. The zero value (plus a Link) is usable.
type Config struct {
	// Link is applied to each shaped direction.
	Link Link
	// Seed seeds the PCG random source of loss and jitter decisions. The same seed and the
	// same packet sequence give the same decisions; only wall-clock timing varies.
	// Ingress (Direction Both) uses an independent stream derived from the same seed.
	Seed uint64
	// Direction is Egress (zero) or Both.
	Direction Direction
	// QueueBytes bounds the bytes waiting to be serialised onto the link; a packet that
	// does not fit is dropped (drop-tail). Zero means what the link carries in 100 ms,
	// and at least 64 KiB. Ignored when Rate is 0 (no queue forms).
	QueueBytes int
	// PacketOverhead is added to each packet's size for rate and queue accounting.
	// Zero means DefaultPacketOverhead (28); negative means none.
	PacketOverhead int
}

// Validate reports an invalid field.
func (c *Config) Validate() error {
	if err := c.Link.Validate(); err != nil {
		return err
	}
	if c.Direction != Egress && c.Direction != Both {
		return fmt.Errorf("linkshape: unknown Direction %d", c.Direction)
	}
	if c.QueueBytes < 0 {
		return fmt.Errorf("linkshape: negative QueueBytes %d", c.QueueBytes)
	}
	return nil
}

func (c Config) withDefaults() Config {
	if c.QueueBytes == 0 {
		c.QueueBytes = max(64<<10, int(c.Link.Rate/8/10))
	}
	switch {
	case c.PacketOverhead == 0:
		c.PacketOverhead = DefaultPacketOverhead
	case c.PacketOverhead < 0:
		c.PacketOverhead = 0
	}
	return c
}

// Stats counts the packets of one direction.
type Stats struct {
	OfferedPackets, OfferedBytes     uint64 // handed to the shaper
	DeliveredPackets, DeliveredBytes uint64 // passed on after the delay line
	LostPackets, LostBytes           uint64 // dropped by random loss
	DroppedPackets, DroppedBytes     uint64 // dropped because the queue was full
}

// Conn is a net.PacketConn that shapes traffic through a rate-limited, delayed, lossy
// link. It forwards SetReadBuffer, SetWriteBuffer and SyscallConn to the wrapped conn so
// quic-go can size socket buffers, but it deliberately has no ReadMsgUDP/WriteMsgUDP:
// quic-go must use ReadFrom/WriteTo, which are the shaped paths.
type Conn struct {
	pc      net.PacketConn
	cfg     Config
	egress  *pipe
	ingress *pipe // nil for Egress

	arrivals chan packet // ingress deliveries, read by ReadFrom
	readDL   deadline
	closed   chan struct{}
	once     sync.Once
	wg       sync.WaitGroup
}

type packet struct {
	b    []byte
	addr net.Addr
	at   time.Time // delivery time
}

// Wrap shapes pc. The Conn owns pc: Close closes it.
func Wrap(pc net.PacketConn, cfg Config) (*Conn, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	c := &Conn{pc: pc, cfg: cfg, closed: make(chan struct{})}
	c.readDL.changed = make(chan struct{})
	c.egress = newPipe(cfg, rand.NewPCG(cfg.Seed, 0x9e3779b97f4a7c15), func(p packet) {
		// UDP semantics: a failed send is a lost packet; quic-go recovers.
		_, _ = pc.WriteTo(p.b, p.addr)
	})
	c.wg.Go(func() { c.egress.run(c.closed) })
	if cfg.Direction == Both {
		c.arrivals = make(chan packet, 4096)
		c.ingress = newPipe(cfg, rand.NewPCG(cfg.Seed, 0x6a09e667f3bcc909), func(p packet) {
			select {
			case c.arrivals <- p:
			default: // reader not keeping up: the socket buffer overflows
			}
		})
		c.wg.Go(func() { c.ingress.run(c.closed) })
		c.wg.Go(c.readLoop)
	}
	return c, nil
}

// WriteTo sends b to addr through the shaped egress. Like UDP, it reports success for a
// packet the link later drops. b is copied (quic-go reuses its buffers).
func (c *Conn) WriteTo(b []byte, addr net.Addr) (int, error) {
	select {
	case <-c.closed:
		return 0, &net.OpError{Op: "write", Net: "udp", Addr: addr, Err: net.ErrClosed}
	default:
	}
	c.egress.offer(append([]byte(nil), b...), addr, time.Now())
	return len(b), nil
}

// ReadFrom reads the next packet; with Direction Both it has passed the shaped ingress.
func (c *Conn) ReadFrom(b []byte) (int, net.Addr, error) {
	if c.ingress == nil {
		return c.pc.ReadFrom(b)
	}
	for {
		dl, changed := c.readDL.get()
		var timeout <-chan time.Time
		var t *time.Timer
		if !dl.IsZero() {
			d := time.Until(dl)
			if d <= 0 {
				return 0, nil, &net.OpError{Op: "read", Net: "udp", Addr: c.LocalAddr(), Err: os.ErrDeadlineExceeded}
			}
			t = time.NewTimer(d)
			timeout = t.C
		}
		select {
		case p := <-c.arrivals:
			stopTimer(t)
			return copy(b, p.b), p.addr, nil
		case <-c.closed:
			stopTimer(t)
			return 0, nil, &net.OpError{Op: "read", Net: "udp", Addr: c.LocalAddr(), Err: net.ErrClosed}
		case <-timeout:
			return 0, nil, &net.OpError{Op: "read", Net: "udp", Addr: c.LocalAddr(), Err: os.ErrDeadlineExceeded}
		case <-changed:
			stopTimer(t)
		}
	}
}

func stopTimer(t *time.Timer) {
	if t != nil {
		t.Stop()
	}
}

func (c *Conn) readLoop() {
	buf := make([]byte, 65536)
	for {
		n, addr, err := c.pc.ReadFrom(buf)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			select {
			case <-c.closed:
				return
			default:
			}
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue // transient (e.g. ICMP-induced) errors: keep reading
		}
		c.ingress.offer(append([]byte(nil), buf[:n]...), addr, time.Now())
	}
}

// Close stops the shaper, discards packets still in flight and closes the wrapped conn.
func (c *Conn) Close() error {
	var err error
	c.once.Do(func() {
		close(c.closed)
		err = c.pc.Close()
		c.wg.Wait()
	})
	return err
}

// LocalAddr is the wrapped conn's address.
func (c *Conn) LocalAddr() net.Addr { return c.pc.LocalAddr() }

// SetDeadline sets the read and write deadlines.
func (c *Conn) SetDeadline(t time.Time) error {
	if err := c.SetReadDeadline(t); err != nil {
		return err
	}
	return c.SetWriteDeadline(t)
}

// SetReadDeadline sets the deadline for ReadFrom.
func (c *Conn) SetReadDeadline(t time.Time) error {
	if c.ingress == nil {
		return c.pc.SetReadDeadline(t)
	}
	c.readDL.set(t)
	return nil
}

// SetWriteDeadline is accepted for the interface; shaped writes never block.
func (c *Conn) SetWriteDeadline(t time.Time) error { return c.pc.SetWriteDeadline(t) }

// SetReadBuffer forwards to the wrapped conn if it supports it.
func (c *Conn) SetReadBuffer(n int) error {
	if s, ok := c.pc.(interface{ SetReadBuffer(int) error }); ok {
		return s.SetReadBuffer(n)
	}
	return errors.ErrUnsupported
}

// SetWriteBuffer forwards to the wrapped conn if it supports it.
func (c *Conn) SetWriteBuffer(n int) error {
	if s, ok := c.pc.(interface{ SetWriteBuffer(int) error }); ok {
		return s.SetWriteBuffer(n)
	}
	return errors.ErrUnsupported
}

// SyscallConn forwards to the wrapped conn (quic-go uses it for buffer sizes and the DF
// bit). Wrapped conns without it return errors.ErrUnsupported, which quic-go refuses:
// wrap a *net.UDPConn.
func (c *Conn) SyscallConn() (syscall.RawConn, error) {
	if s, ok := c.pc.(interface {
		SyscallConn() (syscall.RawConn, error)
	}); ok {
		return s.SyscallConn()
	}
	return nil, errors.ErrUnsupported
}

// EgressStats returns the counters of written packets.
func (c *Conn) EgressStats() Stats { return c.egress.stats() }

// IngressStats returns the counters of read packets (zero unless Direction is Both).
func (c *Conn) IngressStats() Stats {
	if c.ingress == nil {
		return Stats{}
	}
	return c.ingress.stats()
}

// Config returns the configuration with defaults filled in.
func (c *Conn) Config() Config { return c.cfg }

type deadline struct {
	mu      sync.Mutex
	t       time.Time
	changed chan struct{}
}

func (d *deadline) set(t time.Time) {
	d.mu.Lock()
	d.t = t
	close(d.changed)
	d.changed = make(chan struct{})
	d.mu.Unlock()
}

func (d *deadline) get() (time.Time, chan struct{}) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.t, d.changed
}

// pipe is one shaped direction: loss, a drop-tail queue drained at the link rate (a
// token bucket one packet deep), then a delay line. The queue is virtual: each packet's
// serialisation end time is computed when it is offered, and the backlog in bytes is
// (lastTxEnd − now) × rate.
type pipe struct {
	link     Link
	limit    int
	overhead int
	deliver  func(packet)

	mu          sync.Mutex
	rng         *rand.Rand
	lastTxEnd   time.Time
	lastDeliver time.Time
	line        []packet // FIFO, non-decreasing at
	head        int
	wake        chan struct{}

	offeredP, offeredB, delivP, delivB, lostP, lostB, dropP, dropB atomic.Uint64
}

func newPipe(cfg Config, src rand.Source, deliver func(packet)) *pipe {
	return &pipe{
		link: cfg.Link, limit: cfg.QueueBytes, overhead: cfg.PacketOverhead,
		deliver: deliver, rng: rand.New(src), wake: make(chan struct{}, 1),
	}
}

func (p *pipe) txTime(size int) time.Duration {
	return time.Duration(float64(size*8) / float64(p.link.Rate) * float64(time.Second))
}

func (p *pipe) offer(b []byte, addr net.Addr, now time.Time) {
	n := uint64(len(b))
	p.offeredP.Add(1)
	p.offeredB.Add(n)
	p.mu.Lock()
	if p.link.Loss > 0 && p.rng.Float64() < p.link.Loss {
		p.mu.Unlock()
		p.lostP.Add(1)
		p.lostB.Add(n)
		return
	}
	txEnd := now
	if p.link.Rate > 0 {
		size := len(b) + p.overhead
		start := now
		if p.lastTxEnd.After(now) {
			start = p.lastTxEnd
			backlog := int(float64(p.lastTxEnd.Sub(now)) / float64(time.Second) * float64(p.link.Rate) / 8)
			if backlog+size > p.limit {
				p.mu.Unlock()
				p.dropP.Add(1)
				p.dropB.Add(n)
				return
			}
		}
		txEnd = start.Add(p.txTime(size))
		p.lastTxEnd = txEnd
	}
	delay := p.link.Delay
	if p.link.Jitter > 0 {
		delay += time.Duration((2*p.rng.Float64() - 1) * float64(p.link.Jitter))
		delay = max(delay, 0)
	}
	at := txEnd.Add(delay)
	if at.Before(p.lastDeliver) {
		at = p.lastDeliver
	}
	p.lastDeliver = at
	p.line = append(p.line, packet{b: b, addr: addr, at: at})
	p.mu.Unlock()
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// run delivers packets when their time comes, until closed.
func (p *pipe) run(closed <-chan struct{}) {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	var due []packet
	for {
		p.mu.Lock()
		now := time.Now()
		due = due[:0]
		for p.head < len(p.line) && !p.line[p.head].at.After(now) {
			due = append(due, p.line[p.head])
			p.line[p.head] = packet{}
			p.head++
		}
		if p.head == len(p.line) { // empty: reuse the backing array
			p.line, p.head = p.line[:0], 0
		} else if p.head > 1024 && p.head > len(p.line)/2 {
			p.line, p.head = append(p.line[:0], p.line[p.head:]...), 0
		}
		wait := time.Hour
		if p.head < len(p.line) {
			wait = p.line[p.head].at.Sub(now)
		}
		p.mu.Unlock()
		for _, pk := range due {
			p.delivP.Add(1)
			p.delivB.Add(uint64(len(pk.b)))
			p.deliver(pk)
		}
		if len(due) > 0 {
			continue // time passed while delivering
		}
		timer.Reset(wait)
		select {
		case <-closed:
			return
		case <-p.wake:
			if !timer.Stop() {
				select {
				case <-timer.C:
				default:
				}
			}
		case <-timer.C:
		}
	}
}

func (p *pipe) stats() Stats {
	return Stats{
		OfferedPackets: p.offeredP.Load(), OfferedBytes: p.offeredB.Load(),
		DeliveredPackets: p.delivP.Load(), DeliveredBytes: p.delivB.Load(),
		LostPackets: p.lostP.Load(), LostBytes: p.lostB.Load(),
		DroppedPackets: p.dropP.Load(), DroppedBytes: p.dropB.Load(),
	}
}
