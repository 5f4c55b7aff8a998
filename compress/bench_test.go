package compress

import (
	"flag"
	"fmt"
	"math"
	"testing"
	"time"
)

// Benchmarks: go test -run '^$' -bench . -benchtime 2s ./compress/
// Add -bench.large to include 10M values. Every benchmark reports
// bits/param (message bits per value, header included) and relerr
// (‖x − decode(encode(x))‖₂ / ‖x‖₂) on Gaussian N(0, 10⁻⁶) values.

var benchLarge = flag.Bool("bench.large", false, "also benchmark 10M-value vectors")

var benchSettings = []string{
	"fp32", "fp16", "bf16", "q8", "q4", "q2", "q1", "q8/sr",
	"topk:0.01", "topk:0.01+q8", "topk:0.01+q4", "topk:0.01+q2", "topk:0.03/m+q1",
	"lowrank:4", "lowrank:4+q8",
	"fp32+zstd", "q4+zstd", "topk:0.01+q4+zstd",
}

func benchSizes() []int {
	if *benchLarge {
		return []int{1 << 20, 10 << 20}
	}
	return []int{1 << 20}
}

// benchShape cuts n values into 1024×1024 matrices (then a vector).
func benchShape(n int) Shape {
	var s Shape
	for off := 0; off+1<<20 <= n; off += 1 << 20 {
		s = append(s, Segment{Offset: off, Rows: 1024, Cols: 1024})
	}
	return s
}

func benchCodec(b *testing.B, setting string, n int) *Codec {
	cfg := Config{Setting: MustParse(setting), Seed: 1}
	if cfg.Setting.Sparsifier == LowRank || cfg.Setting.Matrices {
		cfg.Shape = benchShape(n)
	}
	c, err := New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	return c
}

func relErr(x, d []float32) float64 {
	var num, den float64
	for i := range x {
		e := float64(x[i]) - float64(d[i])
		num += e * e
		den += float64(x[i]) * float64(x[i])
	}
	return math.Sqrt(num / den)
}

func benchCodecs(b *testing.B, op string) {
	for _, setting := range benchSettings {
		for _, n := range benchSizes() {
			b.Run(fmt.Sprintf("%s/n=%dM", setting, n>>20), func(b *testing.B) {
				x := gaussian(n, 1e-3, 1)
				c := benchCodec(b, setting, n)
				msg, err := c.Encode(nil, x)
				if err != nil {
					b.Fatal(err)
				}
				d, err := c.Decode(nil, msg)
				if err != nil {
					b.Fatal(err)
				}
				b.SetBytes(int64(4 * n))
				b.ReportAllocs()
				b.ResetTimer()
				cpu0, iters := cpuTime(), 0
				for b.Loop() {
					iters++
					if op != "decode" {
						if msg, err = c.Encode(msg[:0], x); err != nil {
							b.Fatal(err)
						}
					}
					if op != "encode" {
						if d, err = c.Decode(d[:0], msg); err != nil {
							b.Fatal(err)
						}
					}
				}
				reportCPU(b, cpuTime()-cpu0, iters, n)
				b.ReportMetric(8*float64(len(msg))/float64(n), "bits/param")
				b.ReportMetric(relErr(x, d), "relerr")
			})
		}
	}
}

// reportCPU reports "cpuMB/s": the bytes of input processed per second of
// process CPU time (the benchmark is single-threaded and allocation-free),
// i.e. throughput per core independent of other load on the machine.
func reportCPU(b *testing.B, cpu time.Duration, iters, n int) {
	if cpu > 0 && iters > 0 {
		b.ReportMetric(float64(4*n)*float64(iters)/cpu.Seconds()/1e6, "cpuMB/s")
	}
}

func BenchmarkEncode(b *testing.B)    { benchCodecs(b, "encode") }
func BenchmarkDecode(b *testing.B)    { benchCodecs(b, "decode") }
func BenchmarkRoundTrip(b *testing.B) { benchCodecs(b, "both") }

// BenchmarkResidual: one error-feedback round (add, encode, decode own
// message, subtract), as a sender runs it.
func BenchmarkResidual(b *testing.B) {
	for _, setting := range []string{"q8", "q4", "topk:0.01+q4", "topk:0.01+q2", "lowrank:4+q8"} {
		n := 1 << 20
		b.Run(fmt.Sprintf("%s/n=%dM", setting, n>>20), func(b *testing.B) {
			x := gaussian(n, 1e-3, 1)
			c := benchCodec(b, setting, n)
			r, err := c.NewResidual(n)
			if err != nil {
				b.Fatal(err)
			}
			var msg []byte
			b.SetBytes(int64(4 * n))
			b.ReportAllocs()
			cpu0, iters := cpuTime(), 0
			for b.Loop() {
				iters++
				if msg, err = r.Encode(msg[:0], x); err != nil {
					b.Fatal(err)
				}
			}
			reportCPU(b, cpuTime()-cpu0, iters, n)
			b.ReportMetric(8*float64(len(msg))/float64(n), "bits/param")
		})
	}
}

// BenchmarkTopKSelect isolates the selection (no value coding): it must
// not be the bottleneck of a top-k codec.
func BenchmarkTopKSelect(b *testing.B) {
	n := 1 << 20
	x := gaussian(n, 1e-3, 1)
	c := benchCodec(b, "topk:0.01", n)
	var dst []byte
	b.SetBytes(int64(4 * n))
	b.ReportAllocs()
	cpu0, iters := cpuTime(), 0
	for b.Loop() {
		iters++
		dst, _ = c.appendTopK(dst[:0], x, 0)
	}
	reportCPU(b, cpuTime()-cpu0, iters, n)
}
