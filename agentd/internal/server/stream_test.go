package server

import (
	"bufio"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/agentd/agentd/agentd/api"
)

// TestSlowClientGetsTheResult: a client stops reading a deploy stream while
// the operation emits far more progress lines than the stream buffers (and
// than the kernel's socket buffers hold), then reads on. Progress lines may
// be missing, and the stream says how many; the result never is.
func TestSlowClientGetsTheResult(t *testing.T) {
	const lines = 100_000 // of 1 KiB each: 100 MiB, far past any buffer
	filler := strings.Repeat("x", 1024)
	emitted := make(chan struct{})
	s := &Server{Log: slog.New(slog.DiscardHandler)}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.stream(w, r, func(emit func(api.Event)) api.OpResult {
			for i := range lines {
				emit(api.Event{Type: "info", Phase: api.PhasePreboot, Message: fmt.Sprintf("%d %s", i, filler)})
			}
			close(emitted)
			res := api.OpResult{App: "a", OK: true, Changed: true, Release: "v7", Previous: "v6"}
			emit(api.Event{Time: time.Now().UTC(), Type: "result", Message: "ok", Result: &res})
			return res
		})
	}))
	t.Cleanup(srv.Close)

	resp, err := http.Post(srv.URL+"/v1/apps/a/deploys", "application/gzip", strings.NewReader(""))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	// The client reads nothing of the body until every progress line was
	// emitted.
	<-emitted

	var progress, saidDropped int
	var last api.Event
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var e api.Event
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			t.Fatalf("line %q: %v", sc.Text(), err)
		}
		if e.Type == "result" {
			last = e
			continue
		}
		if last.Type != "" {
			t.Fatalf("an event after the result: %+v", e)
		}
		if n, ok := strings.CutSuffix(e.Message, " progress lines were not sent: the client read too slowly"); ok {
			fmt.Sscan(n, &saidDropped)
			continue
		}
		progress++
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if last.Result == nil || !last.Result.OK || last.Result.Release != "v7" {
		t.Fatalf("last event %+v, want the result of v7", last)
	}
	missing := lines - progress
	t.Logf("%d of %d progress lines reached the client, %d missing, the stream said %d", progress, lines, missing, saidDropped)
	if missing == 0 {
		t.Fatalf("no progress line was dropped: the test did not stall the stream")
	}
	if saidDropped != missing {
		t.Errorf("the stream said %d lines were dropped, %d are missing", saidDropped, missing)
	}
}
