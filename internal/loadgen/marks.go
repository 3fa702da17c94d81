package loadgen

// FailedPerMark attributes the failed requests in Failures to the windows
// the marks open: the i-th count is the requests that failed (At+Took) at
// or after Marks[i] and before Marks[i+1], the last window running to the
// end of the run. Requests that failed before the first mark are returned
// apart. A request is placed by when it failed, not when it was sent,
// because a deploy is to blame for what fails while it runs.
//
// Only the first 1,000 failures are located (Failures); the rest are in
// Failed alone, so the counts may sum to less than Failed.
func (r Result) FailedPerMark() (perMark []int64, before int64) {
	perMark = make([]int64, len(r.Marks))
	for _, f := range r.Failures {
		at := f.At + f.Took
		i := len(r.Marks) - 1
		for i >= 0 && r.Marks[i].At > at {
			i--
		}
		if i < 0 {
			before++
			continue
		}
		perMark[i]++
	}
	return perMark, before
}
