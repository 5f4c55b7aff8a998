package report

import (
	"bytes"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgsvg"
)

// Chart sizes.
const (
	chartWidth  = 16 * vg.Centimeter
	chartHeight = 9 * vg.Centimeter
)

// rightPad keeps the last round's tick label inside the picture.
const rightPad = 4 * vg.Millimeter

// MaxShareLines is how many contributors shares.svg draws a line for (the best paid); the rest
// are summed into one "others" line.
const MaxShareLines = 8

// WritePlots writes loss.svg (validation loss and accuracy over rounds) and shares.svg
// (cumulative payout share per contributor over rounds) into dir, creating it, and returns the
// paths written.
func WritePlots(dir string, r Report) ([]string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("report: plots: %w", err)
	}
	var paths []string
	for _, ch := range []struct {
		name string
		svg  func(Report) ([]byte, error)
	}{{"loss.svg", LossSVG}, {"shares.svg", SharesSVG}} {
		b, err := ch.svg(r)
		if err != nil {
			return paths, err
		}
		path := filepath.Join(dir, ch.name)
		if err := writeFileAtomic(path, b); err != nil {
			return paths, fmt.Errorf("report: plots: %w", err)
		}
		paths = append(paths, path)
	}
	return paths, nil
}

// writeFileAtomic writes b to path through a temporary file in the same directory, so a reader
// (a browser reloading the chart) never sees half a file.
func writeFileAtomic(path string, b []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		os.Remove(f.Name())
		return err
	}
	if err := f.Close(); err != nil {
		os.Remove(f.Name())
		return err
	}
	if err := os.Chmod(f.Name(), 0o644); err != nil {
		os.Remove(f.Name())
		return err
	}
	if err := os.Rename(f.Name(), path); err != nil {
		os.Remove(f.Name())
		return err
	}
	return nil
}

// LossSVG renders the validation loss (top) and accuracy (bottom) of the measured rounds as one
// SVG document. Rounds the validator did not measure are skipped; with none measured the axes are
// drawn empty and the title says so.
func LossSVG(r Report) ([]byte, error) {
	var loss, acc plotter.XYs
	for _, rr := range r.Rounds {
		if rr.ValLoss != nil {
			loss = append(loss, plotter.XY{X: float64(rr.Number), Y: *rr.ValLoss})
		}
		if rr.ValAccuracy != nil {
			acc = append(acc, plotter.XY{X: float64(rr.Number), Y: 100 * *rr.ValAccuracy})
		}
	}
	title := fmt.Sprintf("cohort %d %s: validation loss", r.Cohort, r.Name)
	if len(loss) == 0 {
		title += " (not measured yet)"
	}
	lp, err := roundPlot(r, title, "loss", loss)
	if err != nil {
		return nil, err
	}
	if len(loss) == 0 {
		lp.Y.Min, lp.Y.Max = 0, 1
	}
	ap, err := roundPlot(r, "validation accuracy", "accuracy %", acc)
	if err != nil {
		return nil, err
	}
	ap.Y.Min, ap.Y.Max = 0, 100
	c := vgsvg.New(chartWidth, 2*chartHeight)
	dc := draw.New(c)
	tiles := draw.Tiles{Rows: 2, Cols: 1, PadTop: vg.Millimeter, PadBottom: vg.Millimeter, PadRight: rightPad, PadX: 2 * vg.Millimeter, PadY: 4 * vg.Millimeter}
	canvases := plot.Align([][]*plot.Plot{{lp}, {ap}}, tiles, dc)
	lp.Draw(canvases[0][0])
	ap.Draw(canvases[1][0])
	var buf bytes.Buffer
	if _, err := c.WriteTo(&buf); err != nil {
		return nil, fmt.Errorf("report: loss chart: %w", err)
	}
	return buf.Bytes(), nil
}

// roundPlot is a line plot over rounds 1..max(planned, last) with integer round ticks.
func roundPlot(r Report, title, ylabel string, xys plotter.XYs) (*plot.Plot, error) {
	p := plot.New()
	p.Title.Text = title
	p.X.Label.Text = "round"
	p.Y.Label.Text = ylabel
	p.X.Min, p.X.Max = 1, float64(max(r.PlannedRounds, lastRound(r), 2))
	p.X.Tick.Marker = roundTicks{}
	p.Add(plotter.NewGrid())
	if len(xys) > 0 {
		l, pts, err := plotter.NewLinePoints(xys)
		if err != nil {
			return nil, fmt.Errorf("report: %s chart: %w", ylabel, err)
		}
		l.Color, pts.Color = plotutil.Color(0), plotutil.Color(0)
		pts.Shape = draw.CircleGlyph{}
		p.Add(l, pts)
	}
	return p, nil
}

func lastRound(r Report) uint32 {
	if n := len(r.Rounds); n > 0 {
		return r.Rounds[n-1].Number
	}
	return 0
}

// SharesSVG renders each contributor's cumulative share of the cohort's payouts after each round,
// one line per contributor (the MaxShareLines best paid, the rest summed as "others").
func SharesSVG(r Report) ([]byte, error) {
	p := plot.New()
	p.Title.Text = fmt.Sprintf("cohort %d %s: payout share so far", r.Cohort, r.Name)
	if r.Totals.Paid == 0 {
		p.Title.Text += " (nothing paid yet)"
	}
	p.X.Label.Text = "round"
	p.Y.Label.Text = "share of paid %"
	p.X.Min, p.X.Max = 1, float64(max(r.PlannedRounds, lastRound(r), 2))
	p.Y.Min, p.Y.Max = 0, 100
	p.X.Tick.Marker = roundTicks{}
	p.Add(plotter.NewGrid())
	p.Legend.Top = true
	p.Legend.XOffs, p.Legend.YOffs = -2*vg.Millimeter, -3*vg.Millimeter

	shares := r.CumulativeShares()
	var others []float64
	nOthers := 0
	for i, c := range r.Contributors {
		s := shares[c.Name]
		if len(s) == 0 {
			continue
		}
		if i >= MaxShareLines {
			if others == nil {
				others = make([]float64, len(s))
			}
			for j := range s {
				others[j] += s[j]
			}
			nOthers++
			continue
		}
		if err := addShareLine(p, i, c.Name, r, s); err != nil {
			return nil, err
		}
	}
	if nOthers > 0 {
		if err := addShareLine(p, MaxShareLines, fmt.Sprintf("%d others", nOthers), r, others); err != nil {
			return nil, err
		}
	}
	c := vgsvg.New(chartWidth, chartHeight)
	p.Draw(draw.Crop(draw.New(c), 0, -rightPad, 0, 0))
	var buf bytes.Buffer
	if _, err := c.WriteTo(&buf); err != nil {
		return nil, fmt.Errorf("report: shares chart: %w", err)
	}
	return buf.Bytes(), nil
}

func addShareLine(p *plot.Plot, i int, name string, r Report, share []float64) error {
	xys := make(plotter.XYs, len(share))
	for j, s := range share {
		xys[j] = plotter.XY{X: float64(r.Rounds[j].Number), Y: s}
	}
	l, pts, err := plotter.NewLinePoints(xys)
	if err != nil {
		return fmt.Errorf("report: shares chart: %s: %w", name, err)
	}
	l.Color, pts.Color = plotutil.Color(i), plotutil.Color(i)
	l.Dashes = plotutil.Dashes(i / len(plotutil.DefaultColors))
	pts.Shape = plotutil.Shape(i)
	p.Add(l, pts)
	p.Legend.Add(name, l, pts)
	return nil
}

// roundTicks puts ticks on whole rounds only, at most about ten of them.
type roundTicks struct{}

// Ticks implements plot.Ticker.
func (roundTicks) Ticks(lo, hi float64) []plot.Tick {
	if !(hi >= lo) || hi-lo > 1e6 {
		return nil
	}
	step := 1
	for (hi-lo)/float64(step) > 10 {
		switch {
		case step == 1:
			step = 2
		case step == 2:
			step = 5
		default:
			step *= 2
		}
	}
	minor := hi-lo <= 60
	var ticks []plot.Tick
	for x := int(math.Ceil(lo)); float64(x) <= hi; x++ {
		labeled := x%step == 0 || x == 1
		if labeled {
			ticks = append(ticks, plot.Tick{Value: float64(x), Label: strconv.Itoa(x)})
		} else if minor {
			ticks = append(ticks, plot.Tick{Value: float64(x)})
		}
	}
	return ticks
}
