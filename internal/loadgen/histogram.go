package loadgen

import (
	"math"
	"sync/atomic"
	"time"
)

// The latency histogram has logarithmic buckets, each 1% wider than the one
// before, from 100 ns up to about an hour. Memory is fixed (2,500 counters,
// 20 KB) however many millions of requests are recorded, and a quantile is
// reported as its bucket's geometric midpoint, so it is within 0.5% of the
// true sample value. Recording is one atomic add, so workers share one
// histogram without a lock.
const (
	histMin     = 100.0 // ns; everything below histMin*histGrowth lands in bucket 0
	histGrowth  = 1.01
	histBuckets = 2500 // 100 ns * 1.01^2500 ≈ 6.6e12 ns ≈ 1.8 h
)

var histLogGrowth = math.Log(histGrowth)

// LatencySummary summarises the latency of successful requests, measured from
// just before the request is handed to the client until its body has been read
// to the end.
type LatencySummary struct {
	P50 time.Duration
	P99 time.Duration
	Max time.Duration // exact, not bucketed
}

type histogram struct {
	counts [histBuckets]atomic.Int64
	max    atomic.Int64
}

func bucketOf(ns int64) int {
	if float64(ns) < histMin*histGrowth {
		return 0
	}
	i := int(math.Log(float64(ns)/histMin) / histLogGrowth)
	return min(max(i, 0), histBuckets-1)
}

// bucketValue is the geometric midpoint of bucket i, [min*g^i, min*g^(i+1)).
func bucketValue(i int) time.Duration {
	return time.Duration(histMin * math.Pow(histGrowth, float64(i)+0.5))
}

func (h *histogram) record(d time.Duration) {
	ns := max(int64(d), 0)
	h.counts[bucketOf(ns)].Add(1)
	for {
		m := h.max.Load()
		if ns <= m || h.max.CompareAndSwap(m, ns) {
			return
		}
	}
}

func (h *histogram) summary() LatencySummary {
	var counts [histBuckets]int64
	var total int64
	for i := range h.counts {
		counts[i] = h.counts[i].Load()
		total += counts[i]
	}
	if total == 0 {
		return LatencySummary{}
	}
	maxD := time.Duration(h.max.Load())
	return LatencySummary{
		P50: quantile(&counts, total, 0.50, maxD),
		P99: quantile(&counts, total, 0.99, maxD),
		Max: maxD,
	}
}

// quantile returns the value of the sample of rank ceil(q*total) (1-based),
// capped at the exact maximum so that a quantile never exceeds Max.
func quantile(counts *[histBuckets]int64, total int64, q float64, maxD time.Duration) time.Duration {
	rank := max(int64(math.Ceil(q*float64(total))), 1)
	var cum int64
	for i, c := range counts {
		cum += c
		if cum >= rank {
			return min(bucketValue(i), maxD)
		}
	}
	return maxD
}
