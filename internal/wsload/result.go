package wsload

import (
	"slices"
	"time"
)

// Result is what a run saw: every connection, in the order they ended.
type Result struct {
	Conns []Conn
	// DialFailed counts failed dials; DialErrors keeps the first few.
	DialFailed int
	DialErrors []error
	Start, End time.Time
}

// ByRelease counts connections by the release that served them.
func (r Result) ByRelease() map[string]int {
	out := map[string]int{}
	for _, c := range r.Conns {
		out[c.Release]++
	}
	return out
}

// ByHow counts connections by how they ended.
func (r Result) ByHow() map[How]int {
	out := map[How]int{}
	for _, c := range r.Conns {
		out[c.How]++
	}
	return out
}

// Messages counts the echoes checked, in all.
func (r Result) Messages() int {
	n := 0
	for _, c := range r.Conns {
		n += c.Messages
	}
	return n
}

// Closes summarises when connections closed.
type Closes struct {
	// Count is how many closed (Open ones excepted).
	Count int
	// First and Last are the first and last close; Spread the time between.
	First, Last time.Time
	Spread      time.Duration
	// PeakPerSecond is the most closes within any one second (a sliding
	// window), the rate clients come back at.
	PeakPerSecond int
}

// Closes summarises the closes of the connections served by release (""
// for all), Open ones excepted.
func (r Result) Closes(release string) Closes {
	var ts []time.Time
	for _, c := range r.Conns {
		if c.How != Open && (release == "" || c.Release == release) {
			ts = append(ts, c.ClosedAt)
		}
	}
	var s Closes
	if len(ts) == 0 {
		return s
	}
	slices.SortFunc(ts, func(a, b time.Time) int { return a.Compare(b) })
	s.Count, s.First, s.Last = len(ts), ts[0], ts[len(ts)-1]
	s.Spread = s.Last.Sub(s.First)
	for i, j := 0, 0; i < len(ts); i++ {
		for ts[i].Sub(ts[j]) >= time.Second {
			j++
		}
		s.PeakPerSecond = max(s.PeakPerSecond, i-j+1)
	}
	return s
}
