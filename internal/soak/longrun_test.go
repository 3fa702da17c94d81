package soak

import (
	"bytes"
	"fmt"
	"time"

	"github.com/agentd/agentd/agentd/api"
)

// longRun deploys 1,000 times in a row and compares agentd's usage after
// the last deploy with the baseline after the first ten: RSS within +5
// MiB, the same open fds, goroutines within +10, and each part of the state
// directory back to the size that retention keeps.
func (s *soak) longRun() {
	var base usage
	started := time.Now()
	for i := 1; i <= deploys; i++ {
		var res api.OpResult
		if r := s.ag.HctlJSON(&res, "deploy", mainApp, s.release()); r.Code != 0 || !res.OK {
			s.t.Fatalf("deploy %d of the long run: %s", i, r)
		}
		if i == baselineAt {
			base = s.measure()
			fmt.Printf("soak: after %4d deploys: %s\n", i, base)
		}
		if i%100 == 0 {
			u := s.measure()
			fmt.Printf("soak: after %4d deploys: %s (%.0f ms a deploy)\n", i, u, float64(time.Since(started).Milliseconds())/float64(i))
		}
	}
	end := s.measure()
	fmt.Printf("soak: long run: RSS %+d KiB, fds %+d, goroutines %+d; state apps %+d B, slugs %+d B (%+d entries), logs %+d B (%+d entries)\n",
		end.RSSKiB-base.RSSKiB, end.FDs-base.FDs, end.Goroutines-base.Goroutines,
		end.State["apps"].Bytes-base.State["apps"].Bytes,
		end.State["slugs"].Bytes-base.State["slugs"].Bytes, end.State["slugs"].Entries-base.State["slugs"].Entries,
		end.State["logs"].Bytes-base.State["logs"].Bytes, end.State["logs"].Entries-base.State["logs"].Entries)
	if d := end.RSSKiB - base.RSSKiB; d > rssSlackKiB {
		s.t.Errorf("RSS grew by %d KiB over %d deploys (limit %d KiB)", d, deploys-baselineAt, rssSlackKiB)
	}
	if end.FDs != base.FDs {
		s.t.Errorf("open fds: %d after %d deploys, %d after %d", base.FDs, baselineAt, end.FDs, deploys)
	}
	if d := end.Goroutines - base.Goroutines; d > goroutineSlack {
		s.t.Errorf("goroutines grew by %d (limit %d)", d, goroutineSlack)
	}
	for _, sub := range []string{"apps", "slugs", "logs"} {
		b, e := base.State[sub], end.State[sub]
		if e.Bytes > b.Bytes+stateSlack || e.Entries > b.Entries+2 {
			s.t.Errorf("state directory %s/: %s after %d deploys, %s after %d: not back to what retention keeps", sub, b, baselineAt, e, deploys)
		}
	}
}

// measure reads agentd's usage once it is quiet: the app settled (no old
// process draining, whose pidfd and log agentd still hold) and the same
// number of fds twice in a row (the connection of the hctl that asked has
// closed).
func (s *soak) measure() usage {
	deadline := time.Now().Add(settleTimeout)
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for s.unsettled() != "" && time.Now().Before(deadline) {
		<-tick.C
	}
	pid := s.ag.PID()
	var u usage
	for prev := -1; ; prev = u.FDs {
		var err error
		if u, err = measure(pid, s.ag.Socket, s.ag.StateDir); err != nil {
			s.t.Fatal(err)
		}
		if u.FDs == prev || time.Now().After(deadline) {
			return u
		}
		<-tick.C
	}
}

// limitedBuffer keeps the first max bytes of an hctl's output, for the
// message when it fails.
type limitedBuffer struct {
	bytes.Buffer
	max int
}

func (b *limitedBuffer) Write(p []byte) (int, error) {
	if room := b.max - b.Len(); room > 0 {
		b.Buffer.Write(p[:min(room, len(p))])
	}
	return len(p), nil
}
