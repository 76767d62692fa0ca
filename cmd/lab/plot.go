package main

import (
	"fmt"
	"image/color"
	"slices"
	"strconv"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
)

// plotSpec is one figure to write under -out.
type plotSpec struct {
	file string
	save func(path string) error
}

func newPlot(title, x, y string) *plot.Plot {
	p := plot.New()
	p.Title.Text = title
	p.X.Label.Text = x
	p.Y.Label.Text = y
	p.Add(plotter.NewGrid())
	p.Legend.Top = false
	p.Legend.Left = true
	p.X.Tick.Marker = roundTicks{}
	p.Y.Tick.Marker = roundTicks{}
	return p
}

// roundTicks are gonum's default ticks with labels in the shortest form (0.9, not
// 0.9000000000000001).
type roundTicks struct{}

func (roundTicks) Ticks(min, max float64) []plot.Tick {
	ts := plot.DefaultTicks{}.Ticks(min, max)
	for i := range ts {
		if ts[i].Label != "" {
			ts[i].Label = strconv.FormatFloat(ts[i].Value, 'g', 6, 64)
		}
	}
	return ts
}

func saver(p *plot.Plot) func(string) error {
	return func(path string) error { return p.Save(7*vg.Inch, 4.5*vg.Inch, path) }
}

var protocolColor = map[string]color.Color{
	"hyparview": color.RGBA{R: 0x1f, G: 0x77, B: 0xb4, A: 0xff},
	"newscast":  color.RGBA{R: 0xd6, G: 0x27, B: 0x28, A: 0xff},
}

func membershipPlots(res membershipResult) []plotSpec {
	var specs []plotSpec

	// Reliability per cycle after the crash, one line per run.
	rec := newPlot(fmt.Sprintf("Flood reliability after the crash (N=%d, seed %d)", res.N, res.Seed),
		"cycles after the crash (0 = first flood)", "reliability")
	rec.Y.Min, rec.Y.Max = 0, 1.02
	for i, r := range res.Runs {
		pts := make(plotter.XYs, len(r.perCycle))
		for c, v := range r.perCycle {
			pts[c] = plotter.XY{X: float64(c), Y: v}
		}
		l, err := plotter.NewLine(pts)
		if err != nil {
			continue
		}
		l.Color = plotutil.Color(i)
		l.Dashes = plotutil.Dashes(i % 4)
		l.Width = vg.Points(1.5)
		rec.Add(l)
		rec.Legend.Add(fmt.Sprintf("%s, %.0f%% failed", r.Protocol, r.Fail*100), l)
	}
	specs = append(specs, plotSpec{"membership-recovery.svg", saver(rec)})

	// Reliability against the fraction failed, when several fractions were run.
	byProto := map[string][]membershipRun{}
	var protos []string
	for _, r := range res.Runs {
		if _, ok := byProto[r.Protocol]; !ok {
			protos = append(protos, r.Protocol)
		}
		byProto[r.Protocol] = append(byProto[r.Protocol], r)
	}
	sweep := false
	for _, rs := range byProto {
		sweep = sweep || len(rs) > 1
	}
	if sweep {
		sw := newPlot(fmt.Sprintf("Reliability vs nodes failed at once (N=%d)", res.N), "% of nodes failed", "reliability")
		sw.Y.Min, sw.Y.Max = 0, 1.02
		for _, proto := range protos {
			rs := slices.Clone(byProto[proto])
			slices.SortFunc(rs, func(a, b membershipRun) int {
				switch {
				case a.Fail < b.Fail:
					return -1
				case a.Fail > b.Fail:
					return 1
				}
				return 0
			})
			for k, series := range []struct {
				name string
				at   func(r membershipRun) float64
			}{
				{"first flood", func(r membershipRun) float64 { return r.FirstFlood }},
				{"after 3 cycles", func(r membershipRun) float64 {
					if len(r.perCycle) > 3 {
						return r.perCycle[3]
					}
					return r.perCycle[len(r.perCycle)-1]
				}},
			} {
				pts := make(plotter.XYs, len(rs))
				for i, r := range rs {
					pts[i] = plotter.XY{X: r.Fail * 100, Y: series.at(r)}
				}
				l, sc, err := plotter.NewLinePoints(pts)
				if err != nil {
					continue
				}
				l.Color, sc.Color = protocolColor[proto], protocolColor[proto]
				if k == 1 {
					l.Dashes = []vg.Length{vg.Points(5), vg.Points(3)}
					sc.Shape = plotutil.Shape(2)
				}
				sw.Add(l, sc)
				sw.Legend.Add(proto+", "+series.name, l, sc)
			}
		}
		specs = append(specs, plotSpec{"membership-sweep.svg", saver(sw)})
	}

	// In-degree distribution before the crash, first run of each protocol.
	deg := newPlot(fmt.Sprintf("In-degree before the crash (N=%d)", res.N), "in-degree", "nodes")
	for i, proto := range protos {
		r := byProto[proto][0]
		var vals plotter.Values
		var min int
		for d := r.InDegree.Min; d <= r.InDegree.Max; d++ {
			vals = append(vals, float64(r.degrees[d]))
		}
		min = r.InDegree.Min
		bars, err := plotter.NewBarChart(vals, vg.Points(6))
		if err != nil {
			continue
		}
		bars.Color = protocolColor[proto]
		bars.LineStyle.Width = 0
		bars.XMin = float64(min)
		bars.Offset = vg.Points(float64(6*i) - 3)
		deg.Add(bars)
		deg.Legend.Add(proto, bars)
	}
	specs = append(specs, plotSpec{"membership-indegree.svg", saver(deg)})
	return specs
}
