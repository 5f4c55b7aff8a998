package sim

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"runtime/pprof"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/pprof/profile"
)

// BenchmarkCohortScale runs cohorts of a tiny model (mlp:784-16-10, 5 inner steps, the default
// codec, unshaped loopback) at growing sizes and reports what grows with the number of peers:
// per-round wall time, coordinator CPU-seconds per round (all coordinators together, from a CPU
// profile of the rounds after the first, by the goroutines' ProfileLabel), Raft log entries per
// round, control bytes per peer per round (what its messages carried, both ways, beyond the
// uploads and the aggregates), QUIC's packet overhead per peer per round and setup seconds. Every peer, coordinator and its validator share this
// machine's cores. COHORT_SCALE_PEERS overrides the sizes, e.g. COHORT_SCALE_PEERS=8,64.
func BenchmarkCohortScale(b *testing.B) {
	sizes := []int{8, 64, 256, 1000}
	if s := os.Getenv("COHORT_SCALE_PEERS"); s != "" {
		sizes = sizes[:0]
		for _, f := range strings.Split(s, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil || n < 1 {
				b.Fatalf("COHORT_SCALE_PEERS: %q", s)
			}
			sizes = append(sizes, n)
		}
	}
	for _, peers := range sizes {
		b.Run(fmt.Sprintf("peers=%d", peers), func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				const rounds = 4
				var prof bytes.Buffer
				profiling := false
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
				sum, err := Run(ctx, Config{Coordinators: 3, Peers: peers, Model: "mlp:784-16-10", Rounds: rounds, InnerSteps: 5,
					Shards: peers, Partition: "iid", Seed: 1, Logger: quiet(),
					Progress: func(p Progress) {
						// The profile covers the rounds after the first, as the per-round figures do.
						switch {
						case p.Round == 1 && !profiling:
							profiling = pprof.StartCPUProfile(&prof) == nil
						case p.Round == rounds && profiling:
							pprof.StopCPUProfile()
							profiling = false
						}
					}})
				if profiling {
					pprof.StopCPUProfile()
				}
				cancel()
				if err != nil {
					b.Fatal(err)
				}
				if sum.RoundsScored < rounds || !sum.ReplicasAgree {
					b.Fatalf("%d of %d rounds scored, replicas agree %v: %v", sum.RoundsScored, rounds, sum.ReplicasAgree, sum.ScoreNotes)
				}
				var paid uint64
				for _, v := range sum.Shares {
					paid += v
				}
				if paid == 0 {
					b.Fatalf("nobody paid: %v", sum.ScoreNotes)
				}
				cpu, err := labelledCPU(prof.Bytes(), ProfileLabel, "coordinator")
				if err != nil {
					b.Fatal(err)
				}
				sc := sum.Scale
				b.ReportMetric(sc.RoundSeconds, "s/round")
				b.ReportMetric(cpu/float64(rounds-1), "coord-cpu-s/round")
				b.ReportMetric(sc.RaftEntriesPerRound, "raft-entries/round")
				b.ReportMetric(sc.ControlBytesPerPeerRound, "control-B/peer/round")
				b.ReportMetric(sc.PacketOverheadPerPeerRound, "quic-overhead-B/peer/round")
				b.ReportMetric(sc.SetupSeconds, "setup-s")
			}
		})
	}
}

// labelledCPU sums the CPU seconds of the samples in a CPU profile whose goroutines carried
// label key=value.
func labelledCPU(raw []byte, key, value string) (float64, error) {
	if len(raw) == 0 {
		return 0, nil
	}
	p, err := profile.Parse(bytes.NewReader(raw))
	if err != nil {
		return 0, fmt.Errorf("parse the CPU profile: %w", err)
	}
	cpu := -1
	for i, st := range p.SampleType {
		if st.Type == "cpu" {
			cpu = i
		}
	}
	if cpu < 0 {
		return 0, fmt.Errorf("the profile has no cpu samples")
	}
	var ns int64
	for _, s := range p.Sample {
		for _, v := range s.Label[key] {
			if v == value {
				ns += s.Value[cpu]
				break
			}
		}
	}
	return float64(ns) / 1e9, nil
}
