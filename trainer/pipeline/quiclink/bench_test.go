package quiclink

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/cohortlab/cohort/compress"
	"github.com/cohortlab/cohort/trainer"
	"github.com/cohortlab/cohort/trainer/nn"
	"github.com/cohortlab/cohort/trainer/pipeline"
)

// BenchmarkStagePipelineQUIC is pipeline's BenchmarkStagePipeline for 2 stages over QUIC on
// loopback: gpt:4-64-4-32 (bytes), 4 micro-batches of 3 sequences under 1F1B. It reports tokens/s,
// stream-B/step (what stage 0's connection carried each way per step: frames and the transport's
// message headers, without QUIC's packet overhead) and util-sN (busy over wall per stage).
func BenchmarkStagePipelineQUIC(b *testing.B) {
	cfg, err := nn.ParseGPTName("gpt:4-64-4-32")
	if err != nil {
		b.Fatal(err)
	}
	cfg.Batch, cfg.Vocab = 3, 256
	const S, M = 2, 4
	for _, codec := range []string{"fp32", "q8"} {
		b.Run(codec, func(b *testing.B) {
			specs, err := nn.SplitStages(cfg.Layers, S)
			if err != nil {
				b.Fatal(err)
			}
			stages := make([]*pipeline.Stage, S)
			for s, spec := range specs {
				m, err := nn.NewGPTStage(cfg, spec)
				if err != nil {
					b.Fatal(err)
				}
				pc := pipeline.Config{Micro: M, Codec: compress.MustParse(codec), AdamW: trainer.AdamWConfig{LR: 1e-3, ClipNorm: 1}}
				if stages[s], err = pipeline.NewStage(m, pc); err != nil {
					b.Fatal(err)
				}
			}
			eps, peers := group(b, S)
			qlinks := connectAll(b, eps, peers, stages[0].Codecs().MaxFrame())
			r := rand.New(rand.NewPCG(1, 1))
			N := M * cfg.Batch * cfg.Context
			batch := nn.Batch{Tokens: make([]int, N), Y: make([]int, N)}
			for i := range batch.Tokens {
				batch.Tokens[i], batch.Y[i] = r.IntN(cfg.Vocab), r.IntN(cfg.Vocab)
			}
			before := qlinks[0].Stats()
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			busy := make([]time.Duration, S)
			errs := make([]error, S)
			b.ResetTimer()
			start := time.Now()
			var wg sync.WaitGroup
			for s := range stages {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for k := 0; k < b.N; k++ {
						st, err := stages[s].Step(ctx, qlinks[s], k, batch)
						if err != nil {
							errs[s] = err
							cancel()
							return
						}
						busy[s] += st.Busy
					}
				}()
			}
			wg.Wait()
			wall := time.Since(start)
			b.StopTimer()
			if err := errors.Join(errs...); err != nil {
				b.Fatal(err)
			}
			after := qlinks[0].Stats()
			b.ReportMetric(float64(b.N*N)/wall.Seconds(), "tokens/s")
			b.ReportMetric(float64(after.StreamBytesSent-before.StreamBytesSent)/float64(b.N), "sent-stream-B/step")
			b.ReportMetric(float64(after.StreamBytesReceived-before.StreamBytesReceived)/float64(b.N), "recv-stream-B/step")
			b.ReportMetric(float64(after.BytesSent-before.BytesSent)/float64(b.N), "sent-quic-B/step")
			for s := range stages {
				b.ReportMetric(busy[s].Seconds()/wall.Seconds(), fmt.Sprintf("util-s%d", s))
			}
		})
	}
}
