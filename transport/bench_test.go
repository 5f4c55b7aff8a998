package transport

import (
	"context"
	"flag"
	"fmt"
	"testing"
	"time"

	"github.com/cohortlab/cohort/transport/linkshape"
)

var (
	benchLink    = flag.String("xfer.link", "10mbit,50ms,1%", "link (each direction) for BenchmarkStripedGoodput")
	benchSize    = flag.Int("xfer.size", 8<<20, "bytes transferred by BenchmarkStripedGoodput")
	benchChunk   = flag.Int("xfer.chunk", DefaultChunkSize, "chunk size for BenchmarkStripedGoodput")
	benchPerConn = flag.Int("xfer.perconn", 0, "requests in flight per connection (0: default)")
	benchEndgame = flag.Bool("xfer.endgame", false, "turn on endgame duplicate requests")
	benchPush    = flag.Bool("xfer.push", false, "push the blob (client to server) instead of fetching it")
)

// BenchmarkStripedGoodput fetches a blob over a link shaped in both directions (10 Mbit/s,
// 50 ms each way = 100 ms RTT, 1 % loss by default) striped over N QUIC connections, and
// reports goodput, goodput as a fraction of the link rate (link-util), bytes on the wire
// (both directions, with IPv4+UDP headers) per payload byte, and packets lost at random
// and dropped by the full queue (both directions). Flags (after the package):
// -xfer.link, -xfer.size, -xfer.chunk, -xfer.perconn, -xfer.endgame, -xfer.push.
//
//	go test -run '^$' -bench StripedGoodput -benchtime 1x ./transport/
func BenchmarkStripedGoodput(b *testing.B) {
	link, err := linkshape.ParseLink(*benchLink)
	if err != nil {
		b.Fatal(err)
	}
	for _, n := range []int{1, 4, 8, 16, 32} {
		b.Run(fmt.Sprintf("conns=%d", n), func(b *testing.B) {
			data := randomBlob(*benchSize, 9)
			var elapsed time.Duration
			var wire, lost, dropped uint64
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				pushed := make(chan []byte, 1)
				store := NewStore(StoreConfig{OnPush: func(_ NodeID, _ string, _ Hash, d []byte) { pushed <- d }})
				mux := NewMux()
				store.Register(mux)
				env := newXferEnv(b, link.String(), mux)
				m, err := store.Put(data, *benchChunk)
				if err != nil {
					b.Fatal(err)
				}
				conns := env.dial(b, n)
				before := env.srvLink.EgressStats()
				beforeCli := env.cliLn.EgressStats()
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
				b.StartTimer()
				start := time.Now()
				opt := TransferOptions{PerConn: *benchPerConn, Endgame: *benchEndgame}
				var got []byte
				if *benchPush {
					if err = Push(ctx, conns, "bench", data, m, opt); err == nil {
						got = <-pushed
					}
				} else {
					got, err = Fetch(ctx, conns, m.Root(), opt)
				}
				elapsed += time.Since(start)
				b.StopTimer()
				cancel()
				if err != nil {
					b.Fatal(err)
				}
				if len(got) != len(data) {
					b.Fatalf("transferred %d bytes, want %d", len(got), len(data))
				}
				s, c := env.srvLink.EgressStats(), env.cliLn.EgressStats()
				pkts := s.OfferedPackets - before.OfferedPackets + c.OfferedPackets - beforeCli.OfferedPackets
				wire += s.OfferedBytes - before.OfferedBytes + c.OfferedBytes - beforeCli.OfferedBytes + pkts*linkshape.DefaultPacketOverhead
				lost += s.LostPackets - before.LostPackets + c.LostPackets - beforeCli.LostPackets
				dropped += s.DroppedPackets - before.DroppedPackets + c.DroppedPackets - beforeCli.DroppedPackets
				for _, c := range conns {
					c.Close()
				}
				b.StartTimer()
			}
			b.SetBytes(int64(len(data)))
			goodput := float64(len(data)) * 8 * float64(b.N) / elapsed.Seconds()
			b.ReportMetric(goodput/1e6, "Mbit/s")
			b.ReportMetric(goodput/float64(link.Rate), "link-util")
			b.ReportMetric(float64(wire)/float64(len(data)*b.N), "wire/payload")
			b.ReportMetric(float64(lost)/float64(b.N), "lost-pkts")
			b.ReportMetric(float64(dropped)/float64(b.N), "queue-drops")
		})
	}
}
