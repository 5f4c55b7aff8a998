package round

import (
	"errors"
	"fmt"
	"math"
	"time"
)

// ErrConfig is wrapped by the errors Config.Validate returns.
var ErrConfig = errors.New("round: invalid config")

// Config configures how the leader drives training rounds. Zero values mean the defaults.
type Config struct {
	// Timeout is the time from opening a round to its deadline; default 120s. Whatever arrived
	// by the deadline counts; the leader closes a round early once every participant reported.
	Timeout time.Duration
	// AbortAfter is how long past the deadline a round whose aggregates cannot all be fetched
	// (an aggregator died, and so did the one its slice moved to) waits before it is abandoned:
	// closed with θ unchanged. Default 5s.
	AbortAfter time.Duration
	// ScoreWait is how long, from the close of round t, the leader waits for round t − 1's scores
	// before opening round t + 1 anyway (its exclusions then come from the rounds scored before);
	// default 2s.
	ScoreWait time.Duration
	// LiveCheck is how often the leader checks that an open round's aggregators answer, and moves
	// the slices of those that do not to live coordinators (consensus.Reassign); default 2s.
	LiveCheck time.Duration
	// ClipMultiple clips every update (per slice) to this multiple of the median update norm;
	// default 2. Scaling an update up gains nothing.
	ClipMultiple float64
	// DropMultiple leaves out of the aggregate (per slice) an update longer than this multiple of
	// the median norm, or shorter than the median over it; default 4, as
	// attribution.Config.NormOutlier. An honest update is never that far from its peers; a
	// scaled-up one would otherwise still push at ClipMultiple, an empty one shrink the step.
	DropMultiple float64
}

// WithDefaults returns c with every zero field set to its default.
func (c Config) WithDefaults() Config {
	if c.Timeout == 0 {
		c.Timeout = 120 * time.Second
	}
	if c.AbortAfter == 0 {
		c.AbortAfter = 5 * time.Second
	}
	if c.LiveCheck == 0 {
		c.LiveCheck = 2 * time.Second
	}
	if c.ScoreWait == 0 {
		c.ScoreWait = 2 * time.Second
	}
	if c.ClipMultiple == 0 {
		c.ClipMultiple = 2
	}
	if c.DropMultiple == 0 {
		c.DropMultiple = 4
	}
	return c
}

// Validate reports the first invalid field: a negative duration, a multiple below 1 or NaN, or a
// ClipMultiple above the DropMultiple (with the defaults filled in: clipping would never act).
func (c Config) Validate() error {
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"Timeout", c.Timeout}, {"AbortAfter", c.AbortAfter}, {"ScoreWait", c.ScoreWait}, {"LiveCheck", c.LiveCheck}} {
		if d.v < 0 {
			return fmt.Errorf("%w: %s %v is negative", ErrConfig, d.name, d.v)
		}
	}
	for _, m := range []struct {
		name string
		v    float64
	}{{"ClipMultiple", c.ClipMultiple}, {"DropMultiple", c.DropMultiple}} {
		if math.IsNaN(m.v) || m.v != 0 && m.v < 1 {
			return fmt.Errorf("%w: %s %v: want 0 (the default) or at least 1", ErrConfig, m.name, m.v)
		}
	}
	if d := c.WithDefaults(); d.ClipMultiple > d.DropMultiple {
		return fmt.Errorf("%w: ClipMultiple %v exceeds DropMultiple %v: an update is dropped before it could be clipped", ErrConfig, d.ClipMultiple, d.DropMultiple)
	}
	return nil
}
