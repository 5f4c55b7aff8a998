package round

import (
	"testing"
	"time"

	"github.com/cohortlab/cohort/consensus"
)

func TestTimeout(t *testing.T) {
	closed := func(opened int64, receipts ...int64) consensus.Round {
		r := consensus.Round{Status: consensus.RoundClosed, OpenedAt: opened, ClosedAt: opened + 40_000}
		for _, at := range receipts {
			r.Receipts = append(r.Receipts, consensus.Receipt{At: opened + at})
		}
		return r
	}
	late := closed(0, 2_000)
	late.Receipts = append(late.Receipts, consensus.Receipt{At: 45_000}) // after the close
	for _, tc := range []struct {
		name   string
		rounds []consensus.Round
		want   time.Duration
	}{
		{"no rounds", nil, time.Minute},
		{"no receipts", []consensus.Round{closed(0)}, time.Minute},
		{"3x slowest", []consensus.Round{closed(0, 4_000, 6_000)}, 18 * time.Second},
		{"at least 5s", []consensus.Round{closed(0, 100)}, 5 * time.Second},
		{"at most the timeout", []consensus.Round{closed(0, 30_000)}, time.Minute},
		{"last three with receipts", []consensus.Round{closed(0, 15_000), closed(0, 1_000), closed(0), closed(0, 2_000), closed(0, 3_000)}, 9 * time.Second},
		{"a receipt after the close does not count", []consensus.Round{late}, 6 * time.Second},
		{"an open round does not count", []consensus.Round{closed(0, 2_000), {Status: consensus.RoundOpen, Receipts: []consensus.Receipt{{At: 50_000}}}}, 6 * time.Second},
	} {
		if got := Timeout(tc.rounds, time.Minute); got != tc.want {
			t.Errorf("%s: Timeout = %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestExtendedDeadlineLeavesARoundTimeForUploads(t *testing.T) {
	r := consensus.Round{OpenedAt: 1_000, Deadline: 41_000}
	for _, now := range []int64{1_000, 20_000, 41_000, 100_000} {
		d := ExtendedDeadline(r, now)
		up := r.OpenedAt + (d-r.OpenedAt)*3/4 // protocol.UploadDeadline
		if got := up - now; got < 40_000-1 || got > 40_000 {
			t.Errorf("now %d: uploads close %dms from now, want the round-time 40000", now, got)
		}
	}
}
