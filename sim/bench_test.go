package sim

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// BenchmarkCohort runs a simulated cohort of 8 peers behind 10 Mbit/s, 100 ms RTT links, at 0 % and
// 1 % loss, without and with overlapping communication (τ = 10 of H = 50 inner steps), and reports
// compute utilisation (time in inner steps / wall time: over the whole run, and steady, the rounds
// after the first), wire bytes per payload byte, and seconds per round. All peers share this
// machine's cores, so a peer here computes more slowly than on its own machine and hides less of
// the link behind the same τ.
func BenchmarkCohort(b *testing.B) {
	for _, overlap := range []int{0, 10} {
		for _, loss := range []string{"0%", "1%"} {
			b.Run(fmt.Sprintf("overlap=%d/loss=%s", overlap, loss), func(b *testing.B) {
				for i := 0; i < b.N; i++ {
					ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
					sum, err := Run(ctx, Config{Coordinators: 3, Peers: 8, Rounds: 6, InnerSteps: 50, Overlap: overlap,
						Codec: "topk:0.01+q4", Partition: "dirichlet:0.5", Link: fmt.Sprintf("10mbit,50ms,%s", loss), Seed: 1,
						Logger: quiet()})
					cancel()
					if err != nil {
						b.Fatal(err)
					}
					b.ReportMetric(sum.ComputeSeconds/sum.WallSeconds, "compute-util")
					b.ReportMetric(sum.ComputeUtilSteady, "steady-util")
					b.ReportMetric(float64(sum.BytesSentPerPeer)/float64(sum.PayloadBytesPerPeer), "wire/payload")
					b.ReportMetric(sum.WallSeconds/float64(sum.RoundsCompleted), "s/round")
				}
			})
		}
	}
}
