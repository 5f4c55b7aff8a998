package trainer

import "testing"

// BenchmarkAdamW measures one AdamW step over the MLP's 203,530 parameters, with ordinary gradients
// and with gradients near 1e-21, whose squares would be subnormal (a model that has nearly fitted
// its batch): the two must cost the same.
func BenchmarkAdamW(b *testing.B) {
	for _, tc := range []struct {
		name  string
		scale float32
	}{{"normal", 0.01}, {"tiny", 1e-21}} {
		b.Run(tc.name, func(b *testing.B) {
			const n = 203530
			o, err := NewAdamW(n, AdamWConfig{LR: 1e-3, WeightDecay: 0.01})
			if err != nil {
				b.Fatal(err)
			}
			p, g := make([]float32, n), make([]float32, n)
			for i := range g {
				g[i] = float32(i%13+1) * tc.scale
			}
			for b.Loop() {
				o.Step(p, g)
			}
			b.ReportMetric(float64(b.N*n)/b.Elapsed().Seconds()/1e6, "Mparams/s")
		})
	}
}

// BenchmarkGradNorm measures the global gradient norm over the GPT's 834,304 parameters.
func BenchmarkGradNorm(b *testing.B) {
	g := make([]float32, 834304)
	for i := range g {
		g[i] = float32(i%13+1) * 0.01
	}
	var s float64
	for b.Loop() {
		s += GradNorm(g)
	}
	b.ReportMetric(float64(b.N*len(g))/b.Elapsed().Seconds()/1e6, "Mparams/s")
}
