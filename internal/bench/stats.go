package main

import (
	"fmt"
	"math"
	"slices"
	"strings"
	"time"
)

// Stat is a figure measured several times: its median and range. Every
// figure the benchmark prints is one, so its spread is always shown.
type Stat struct {
	Median float64 `json:"median"`
	Min    float64 `json:"min"`
	Max    float64 `json:"max"`
	N      int     `json:"n"`
}

// stat summarises samples (NaNs are dropped: a ratio with a zero
// denominator has no value).
func stat(samples []float64) Stat {
	var xs []float64
	for _, x := range samples {
		if !math.IsNaN(x) && !math.IsInf(x, 0) {
			xs = append(xs, x)
		}
	}
	if len(xs) == 0 {
		return Stat{} // N == 0: no value (JSON cannot carry NaN)
	}
	slices.Sort(xs)
	n := len(xs)
	med := xs[n/2]
	if n%2 == 0 {
		med = (xs[n/2-1] + xs[n/2]) / 2
	}
	return Stat{Median: med, Min: xs[0], Max: xs[n-1], N: n}
}

// valid reports whether the figure has any sample.
func (s Stat) valid() bool { return s.N > 0 }

// format renders "median [min–max]" with f formatting each number.
func (s Stat) format(f func(float64) string) string {
	if !s.valid() {
		return "–"
	}
	if s.N == 1 || (s.Min == s.Max) {
		return f(s.Median)
	}
	return fmt.Sprintf("%s [%s–%s]", f(s.Median), f(s.Min), f(s.Max))
}

// Formatters for Stat.format.

func fmtInt(x float64) string { return fmt.Sprintf("%.0f", x) }

func fmtF2(x float64) string { return trimZeros(fmt.Sprintf("%.2f", x)) }

func fmtRatio(x float64) string { return fmt.Sprintf("%.2f×", x) }

func fmtPct(x float64) string { return fmt.Sprintf("%.1f %%", x) }

// fmtDur renders seconds as a duration with about three significant digits.
func fmtDur(sec float64) string {
	d := time.Duration(sec * float64(time.Second))
	switch {
	case d < 0:
		return "-" + fmtDur(-sec)
	case d < time.Millisecond:
		return fmt.Sprintf("%.0f µs", sec*1e6)
	case d < 10*time.Millisecond:
		return fmt.Sprintf("%.2f ms", sec*1e3)
	case d < 100*time.Millisecond:
		return fmt.Sprintf("%.1f ms", sec*1e3)
	case d < time.Second:
		return fmt.Sprintf("%.0f ms", sec*1e3)
	default:
		return fmt.Sprintf("%.2f s", sec)
	}
}

func fmtMiB(x float64) string { return fmt.Sprintf("%.1f MiB", x) }

func fmtRate(x float64) string {
	if x >= 10000 {
		return fmt.Sprintf("%.1fk/s", x/1000)
	}
	return fmt.Sprintf("%.0f/s", x)
}

func trimZeros(s string) string {
	if strings.Contains(s, ".") {
		s = strings.TrimRight(strings.TrimRight(s, "0"), ".")
	}
	return s
}

// collect extracts one figure from each of xs.
func collect[T any](xs []T, f func(T) float64) []float64 {
	out := make([]float64, 0, len(xs))
	for _, x := range xs {
		out = append(out, f(x))
	}
	return out
}

// ratio is a/b, NaN when b is 0.
func ratio(a, b float64) float64 {
	if b == 0 {
		return math.NaN()
	}
	return a / b
}
