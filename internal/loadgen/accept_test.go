package loadgen

import (
	"io"
	"net/http"
	"testing"
)

// Accept turns a status into an answer (a maintenance responder's 503),
// never a connection that was cut: a dropped request stays a failure.
func TestAcceptStatus(t *testing.T) {
	for _, kind := range []Kind{NewConnPost, KeepAlivePost} {
		t.Run(string(kind), func(t *testing.T) {
			s := startServer(t, func(s *server, w http.ResponseWriter, r *http.Request) {
				_, _ = io.Copy(io.Discard, r.Body)
				if s.seen.Load()%2 == 0 {
					w.Header().Set("Retry-After", "60")
					w.WriteHeader(http.StatusServiceUnavailable)
				}
				_, _ = io.WriteString(w, "page\n")
			})
			res := Do(t.Context(), Config{URL: s.URL, Kind: kind, Workers: 1, MaxRequests: 100, Accept: []int{http.StatusServiceUnavailable}})
			consistent(t, res)
			if err := res.Verify(); err != nil {
				t.Fatal(err)
			}
			if res.Accepted != 50 || res.Statuses[200] != 50 || res.Statuses[503] != 50 {
				t.Errorf("got %v (accepted %d, statuses %v), want 50 of 200 and 50 accepted 503", res, res.Accepted, res.Statuses)
			}
			// A status not in Accept is still a failure.
			res = Do(t.Context(), Config{URL: s.URL, Kind: kind, Workers: 1, MaxRequests: 10, Accept: []int{http.StatusTooManyRequests}})
			if res.ByClass[ClassNon2xx] != 5 || res.Accepted != 0 {
				t.Errorf("got %v, want 5 non2xx and none accepted", res)
			}
			// So is a cut connection.
			d := startServer(t, dropHandler(1))
			res = Do(t.Context(), Config{URL: d.URL, Kind: kind, Workers: 1, MaxRequests: 10, Accept: []int{http.StatusServiceUnavailable}})
			if res.Failed != 10 {
				t.Errorf("got %v, want every dropped request failed", res)
			}
			assertNoLeaks(t)
		})
	}
}
