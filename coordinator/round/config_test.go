package round

import (
	"errors"
	"math"
	"testing"
	"time"
)

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
		ok   bool
	}{
		{"zero means defaults", Config{}, true},
		{"explicit", Config{Timeout: time.Minute, AbortAfter: time.Second, ScoreWait: time.Second, LiveCheck: time.Second, ClipMultiple: 1, DropMultiple: 1}, true},
		{"negative timeout", Config{Timeout: -1}, false},
		{"negative abort", Config{AbortAfter: -time.Second}, false},
		{"negative score wait", Config{ScoreWait: -time.Second}, false},
		{"negative live check", Config{LiveCheck: -time.Second}, false},
		{"clip below 1", Config{ClipMultiple: 0.5}, false},
		{"drop below 1", Config{DropMultiple: 0.99}, false},
		{"clip NaN", Config{ClipMultiple: math.NaN()}, false},
		{"drop NaN", Config{DropMultiple: math.NaN()}, false},
		{"clip above drop", Config{ClipMultiple: 3, DropMultiple: 2}, false},
		{"clip above default drop", Config{ClipMultiple: 5}, false},
		{"clip equal drop", Config{ClipMultiple: 4, DropMultiple: 4}, true},
		{"drop below default clip", Config{DropMultiple: 1.5}, false},
	} {
		err := tc.cfg.Validate()
		if (err == nil) != tc.ok {
			t.Errorf("%s: Validate() = %v, want ok=%v", tc.name, err, tc.ok)
		}
		if err != nil && !errors.Is(err, ErrConfig) {
			t.Errorf("%s: %v does not wrap ErrConfig", tc.name, err)
		}
	}
}

func TestWithDefaults(t *testing.T) {
	want := Config{Timeout: 120 * time.Second, AbortAfter: 5 * time.Second, ScoreWait: 2 * time.Second, LiveCheck: 2 * time.Second, ClipMultiple: 2, DropMultiple: 4}
	if got := (Config{}).WithDefaults(); got != want {
		t.Fatalf("defaults %+v, want %+v", got, want)
	}
	set := Config{Timeout: time.Second, AbortAfter: time.Second, ScoreWait: time.Second, LiveCheck: time.Second, ClipMultiple: 1.5, DropMultiple: 3}
	if got := set.WithDefaults(); got != set {
		t.Fatalf("WithDefaults changed set fields: %+v", got)
	}
}
