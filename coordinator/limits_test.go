package coordinator

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time          { return c.t }
func (c *fakeClock) advance(d time.Duration) { c.t = c.t.Add(d) }

// TestRateLimiter: a key spends its burst, is refused with a retryable error naming the limit
// and the wait, gets one token back per 1/rate, and never more than the burst; keys are apart.
func TestRateLimiter(t *testing.T) {
	clk := &fakeClock{t: time.Unix(1000, 0)}
	l := newRateLimiter("registrations from", 3, 2, clk.now)
	type step struct {
		advance time.Duration
		key     string
		want    string // "" allowed, else a substring of the refusal
	}
	for i, s := range []step{
		{0, "a", ""}, {0, "a", ""}, {0, "a", ""},
		{0, "a", "unavailable: rate limited: registrations from a exceed 3 at 2/s; retry in 500ms"},
		{0, "b", ""}, // another key has its own bucket
		{250 * time.Millisecond, "a", "retry in 250ms"},
		{250 * time.Millisecond, "a", ""}, // 500 ms: one token
		{0, "a", "rate limited"},
		{time.Hour, "a", ""}, {0, "a", ""}, {0, "a", ""}, // refilled to the burst, no more
		{0, "a", "rate limited"},
	} {
		clk.advance(s.advance)
		err := l.take(s.key)
		switch {
		case s.want == "" && err != nil:
			t.Fatalf("step %d: refused: %v", i, err)
		case s.want != "" && (err == nil || !strings.Contains(err.Error(), s.want)):
			t.Fatalf("step %d: err = %v, want %q", i, err, s.want)
		}
	}
	if off := newRateLimiter("x", 1, -1, clk.now); off.take("a") != nil || off.take("a") != nil {
		t.Fatal("a negative rate limits")
	}
}

// TestRateLimiterForgetsFullBuckets: the limiter remembers at most maxBuckets keys; once full
// it forgets those that refilled, and refuses new keys while none has.
func TestRateLimiterForgetsFullBuckets(t *testing.T) {
	clk := &fakeClock{t: time.Unix(1000, 0)}
	l := newRateLimiter("submits from", 2, 1, clk.now)
	for i := range maxBuckets {
		if err := l.take(fmt.Sprint(i)); err != nil {
			t.Fatal(err)
		}
	}
	clk.advance(500 * time.Millisecond)
	if err := l.take("new"); err == nil || !strings.Contains(err.Error(), "65536 keys are using") {
		t.Fatalf("a new key with every bucket in use: err = %v", err)
	}
	clk.advance(time.Second) // all refilled
	if err := l.take("new"); err != nil {
		t.Fatal(err)
	}
	if n := len(l.buckets); n != 1 {
		t.Fatalf("%d buckets after the sweep, want 1", n)
	}
}

func TestLongPollPlaces(t *testing.T) {
	l := newLimiters(Limits{MaxLongPolls: 2})
	d1, err := l.startLongPoll("k")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.startLongPoll("k"); err != nil {
		t.Fatal(err)
	}
	if _, err := l.startLongPoll("k"); err == nil || !strings.Contains(err.Error(), "too many long-polls from k: 2 waiting, limit 2") {
		t.Fatalf("third long-poll: err = %v", err)
	}
	if _, err := l.startLongPoll("other"); err != nil {
		t.Fatal(err)
	}
	d1()
	if _, err := l.startLongPoll("k"); err != nil {
		t.Fatalf("after one ended: %v", err)
	}
}
