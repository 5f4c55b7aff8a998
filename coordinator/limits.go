package coordinator

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/cohortlab/cohort/protocol"
	"github.com/cohortlab/cohort/transport"
)

// Limits bounds what any key, registered or not, may ask of one coordinator before the work
// reaches Raft: write rates per source and per key, and long-polls per key. Zero fields mean
// the documented defaults; a negative rate turns its limit off.
type Limits struct {
	// RegisterBurst and RegisterRate bound registrations from one source (Source), and any
	// other submit from a key this node does not know as a member or coordinator: a token
	// bucket of RegisterBurst tokens refilled at RegisterRate per second. Such a submit costs
	// the cluster a signature check and a log entry, and keys cost nothing to make, so a key's
	// own budget would not bound them. Zero means 20 and 2/s.
	RegisterBurst int
	RegisterRate  float64
	// SubmitBurst and SubmitRate bound every submit a key sends directly (registrations
	// included) the same way. Submits a registered coordinator forwards were counted at the
	// coordinator that took them. Zero means 200 and 20/s.
	SubmitBurst int
	SubmitRate  float64
	// SourceBurst and SourceRate bound every submit from one source, whatever its keys: the
	// keys a source registered over time each have their own SubmitBurst, this bounds them
	// together. Zero means 400 and 100/s (an office of members behind one address).
	SourceBurst int
	SourceRate  float64
	// MaxLongPolls caps the next-round long-polls one key has waiting on this node at once.
	// Zero means 8.
	MaxLongPolls int
	// Source names the source a connection's registrations count against; nil means
	// transport.SourceOf (an IPv4 address, or an IPv6 /64).
	Source func(remote net.Addr) string
	// Now is the rate limiters' clock; nil means time.Now.
	Now func() time.Time
}

// Defaults for the zero fields of Limits.
const (
	DefaultRegisterBurst = 20
	DefaultRegisterRate  = 2.0
	DefaultSubmitBurst   = 200
	DefaultSubmitRate    = 20.0
	DefaultSourceBurst   = 400
	DefaultSourceRate    = 100.0
	DefaultMaxLongPolls  = 8
)

func (l Limits) withDefaults() Limits {
	if l.RegisterBurst <= 0 {
		l.RegisterBurst = DefaultRegisterBurst
	}
	if l.RegisterRate == 0 {
		l.RegisterRate = DefaultRegisterRate
	}
	if l.SubmitBurst <= 0 {
		l.SubmitBurst = DefaultSubmitBurst
	}
	if l.SubmitRate == 0 {
		l.SubmitRate = DefaultSubmitRate
	}
	if l.SourceBurst <= 0 {
		l.SourceBurst = DefaultSourceBurst
	}
	if l.SourceRate == 0 {
		l.SourceRate = DefaultSourceRate
	}
	if l.MaxLongPolls <= 0 {
		l.MaxLongPolls = DefaultMaxLongPolls
	}
	if l.Source == nil {
		l.Source = transport.SourceOf
	}
	if l.Now == nil {
		l.Now = time.Now
	}
	return l
}

// maxBuckets bounds the keys and sources a rate limiter remembers. Only buckets that are not
// full need remembering (a full one is what a new key gets), so it is swept of those when it
// fills; if every one is in use, new keys are refused until some refill.
const maxBuckets = 1 << 16

// rateLimiter is a token bucket per key (a member key, a source address).
type rateLimiter struct {
	what  string // "registrations from", "submits from": for the error
	burst float64
	rate  float64 // tokens per second; < 0 means no limit
	now   func() time.Time

	mu        sync.Mutex
	buckets   map[string]*bucket
	lastSweep time.Time
}

type bucket struct {
	tokens float64
	at     time.Time // when tokens was last brought up to date
}

func newRateLimiter(what string, burst int, rate float64, now func() time.Time) *rateLimiter {
	return &rateLimiter{what: what, burst: float64(burst), rate: rate, now: now, buckets: map[string]*bucket{}}
}

// take spends one of key's tokens, or returns a retryable error saying when one will be there.
func (l *rateLimiter) take(key string) error {
	if l.rate < 0 {
		return nil
	}
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.buckets[key]
	if b == nil {
		if len(l.buckets) >= maxBuckets && !l.sweep(now) {
			return fmt.Errorf("%w: rate limited: %d keys are using their %s budget; retry later", protocol.ErrUnavailable, len(l.buckets), l.what)
		}
		b = &bucket{tokens: l.burst, at: now}
		l.buckets[key] = b
	}
	l.refill(b, now)
	if b.tokens < 1 {
		wait := time.Duration((1 - b.tokens) / l.rate * float64(time.Second))
		return fmt.Errorf("%w: rate limited: %s %s exceed %g at %g/s; retry in %v", protocol.ErrUnavailable, l.what, key, l.burst, l.rate, wait.Round(time.Millisecond))
	}
	b.tokens--
	return nil
}

func (l *rateLimiter) refill(b *bucket, now time.Time) {
	if dt := now.Sub(b.at); dt > 0 {
		b.tokens = min(l.burst, b.tokens+dt.Seconds()*l.rate)
		b.at = now
	}
}

// sweep forgets full buckets, at most once a second; it reports whether room was made.
func (l *rateLimiter) sweep(now time.Time) bool {
	if now.Sub(l.lastSweep) < time.Second {
		return false
	}
	l.lastSweep = now
	for k, b := range l.buckets {
		if l.refill(b, now); b.tokens >= l.burst {
			delete(l.buckets, k)
		}
	}
	return len(l.buckets) < maxBuckets
}

// refusalReason labels a refusal the transport reports (cohort_refused_total).
func refusalReason(err error) string {
	switch {
	case errors.Is(err, transport.ErrConnLimit):
		return "connection_limit"
	case errors.Is(err, transport.ErrBusy):
		return "busy"
	case errors.Is(err, transport.ErrUnknownType):
		return "unknown_type"
	case errors.Is(err, transport.ErrPayloadTooLarge):
		return "payload_limit"
	case errors.Is(err, transport.ErrTooSlow):
		return "too_slow"
	case errors.Is(err, transport.ErrBadMagic), errors.Is(err, transport.ErrHeaderTooLarge), errors.Is(err, transport.ErrMalformedHeader),
		errors.Is(err, transport.ErrChecksum), errors.Is(err, transport.ErrTrailingData):
		return "bad_frame"
	}
	return "refused_from_header" // by a type's Limit hook: an upload from a non-participant
}

// limiters holds a Server's per-source and per-key budgets.
type limiters struct {
	cfg      Limits
	register *rateLimiter // per source: registrations and unknown keys' submits
	source   *rateLimiter // per source: all submits
	submit   *rateLimiter // per key

	mu        sync.Mutex
	longPolls map[string]int // waiting next-round long-polls, per key
}

func newLimiters(l Limits) *limiters {
	l = l.withDefaults()
	return &limiters{
		cfg:       l,
		register:  newRateLimiter("registrations and unregistered keys' submits from", l.RegisterBurst, l.RegisterRate, l.Now),
		source:    newRateLimiter("submits from", l.SourceBurst, l.SourceRate, l.Now),
		submit:    newRateLimiter("submits from", l.SubmitBurst, l.SubmitRate, l.Now),
		longPolls: map[string]int{},
	}
}

// startLongPoll takes one of key's long-poll places; call the returned func to give it back.
func (l *limiters) startLongPoll(key string) (func(), error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if n := l.longPolls[key]; n >= l.cfg.MaxLongPolls {
		return nil, fmt.Errorf("%w: too many long-polls from %s: %d waiting, limit %d", protocol.ErrUnavailable, key, n, l.cfg.MaxLongPolls)
	}
	l.longPolls[key]++
	return func() {
		l.mu.Lock()
		defer l.mu.Unlock()
		if l.longPolls[key]--; l.longPolls[key] <= 0 {
			delete(l.longPolls, key)
		}
	}, nil
}
