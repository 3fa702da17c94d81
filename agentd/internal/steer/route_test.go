package steer

import (
	"math"
	"testing"
)

// Route(A) sends every new connection to A, Route(B) then every one to B,
// though both listen in one group and accept all along.
func TestRouteSwitchesEveryConnection(t *testing.T) {
	needSteering(t)
	a := listen(t, "127.0.0.1:0")
	addr := addrOf(t, a)
	b := listen(t, addr)
	sa, sb := serve(t, a, 'A'), serve(t, b, 'B')
	g := newTestGroup(t)
	mustRoute(t, g, a, nil, 0)
	if err := g.Attach(a); err != nil {
		t.Fatal(err)
	}

	if got := dialN(t, addr, 500, 4); got['A'] != 500 {
		t.Fatalf("after Route(A): %v, want 500 on A", got)
	}
	mustRoute(t, g, b, nil, 0)
	if got := dialN(t, addr, 500, 4); got['B'] != 500 {
		t.Fatalf("after Route(B): %v, want 500 on B", got)
	}
	if sa.accepted.Load() != 500 || sb.accepted.Load() != 500 {
		t.Fatalf("accepted A %d, B %d; want 500 each", sa.accepted.Load(), sb.accepted.Load())
	}
	steered, err := g.Steered()
	if err != nil {
		t.Fatal(err)
	}
	// A left the routes and keeps its total.
	if !countsAbout(steered[cookie(t, a)], 500) || !countsAbout(steered[cookie(t, b)], 500) {
		t.Fatalf("Steered = %v, want 500 for each of A %d and B %d", steered, cookie(t, a), cookie(t, b))
	}
}

// A canary of 10 % gets 10 % ± 2 % of 10,000 connections, and Steered
// counts what each socket accepted.
func TestCanaryShare(t *testing.T) {
	needSteering(t)
	a := listen(t, "127.0.0.1:0")
	addr := addrOf(t, a)
	b := listen(t, addr)
	sa, sb := serve(t, a, 'A'), serve(t, b, 'B')
	g := newTestGroup(t)
	mustRoute(t, g, a, b, 10)
	if err := g.Attach(a); err != nil {
		t.Fatal(err)
	}

	const n = 10000
	got := dialN(t, addr, n, 8)
	share := float64(got['B']) / n * 100
	t.Logf("canary 10%%: %d of %d connections on B (%.2f %%), %d on A", got['B'], n, share, got['A'])
	if got['A']+got['B'] != n || math.Abs(share-10) > 2 {
		t.Fatalf("marks %v: canary share %.2f %%, want 10 %% ± 2 %%", got, share)
	}
	// Every client got its answer, so each server counted its connection.
	for _, s := range []*server{sa, sb} {
		if int(s.accepted.Load()) != got[s.mark] {
			t.Fatalf("%c accepted %d, clients saw %d", s.mark, s.accepted.Load(), got[s.mark])
		}
	}
	steered, err := g.Steered()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("Steered: A %d, B %d", steered[cookie(t, a)], steered[cookie(t, b)])
	if !countsAbout(steered[cookie(t, a)], got['A']) || !countsAbout(steered[cookie(t, b)], got['B']) {
		t.Fatalf("Steered = %v, accepted A %d (cookie %d) B %d (cookie %d)", steered, got['A'], cookie(t, a), got['B'], cookie(t, b))
	}
}

// 0 and 100 % are exact; a closed canary falls back to the primary.
func TestCanaryEdges(t *testing.T) {
	needSteering(t)
	a := listen(t, "127.0.0.1:0")
	addr := addrOf(t, a)
	b := listen(t, addr)
	serve(t, a, 'A')
	sb := serve(t, b, 'B')
	g := newTestGroup(t)
	mustRoute(t, g, a, b, 0)
	if err := g.Attach(a); err != nil {
		t.Fatal(err)
	}
	if got := dialN(t, addr, 300, 4); got['A'] != 300 {
		t.Fatalf("canary at 0 %%: %v, want all 300 on A", got)
	}
	mustRoute(t, g, a, b, 100)
	if got := dialN(t, addr, 300, 4); got['B'] != 300 {
		t.Fatalf("canary at 100 %%: %v, want all 300 on B", got)
	}
	// The canary's last fds close: the kernel drops it from the sockarray
	// and the program falls back to the primary.
	sb.stop()
	b.Close()
	if got := dialN(t, addr, 300, 4); got['A'] != 300 {
		t.Fatalf("canary closed: %v, want all 300 on A", got)
	}
}

func TestRoutesWord(t *testing.T) {
	for _, tc := range []struct {
		pct  float64
		want uint32
	}{{0, 0}, {10, 429496730}, {0.5, 21474836}, {50, 1 << 31}, {99.99999999999, math.MaxUint32}} {
		if got := threshold(tc.pct); got != tc.want {
			t.Errorf("threshold(%v) = %d, want %d", tc.pct, got, tc.want)
		}
	}
	if w := routesWord(3, 7, 0xdeadbeef); w != 0x0003_0007_dead_beef {
		t.Errorf("routesWord = %#x", w)
	}
	for in, want := range map[string]string{
		"web":                     "web_sk",
		"my-app.web":              "my_app.web_sk",
		"a-very-long-application": "a_very_long__sk",
	} {
		if got := objName(in, "_sk"); got != want {
			t.Errorf("objName(%q) = %q, want %q", in, got, want)
		}
	}
	if got := objName("a-very-long-application", ""); got != "a_very_long_app" {
		t.Errorf("objName without suffix = %q", got)
	}
}

// A hundred generations, each a new socket that takes the routes and then
// the old one closing, as a long-lived agentd does: slots are given back
// and reused, and each socket's count is its own.
func TestRouteManyGenerations(t *testing.T) {
	needSteering(t)
	first := listen(t, "127.0.0.1:0")
	addr := addrOf(t, first)
	g := newTestGroup(t)
	mustRoute(t, g, first, nil, 0)
	if err := g.Attach(first); err != nil {
		t.Fatal(err)
	}
	const generations, each = 100, 5
	prev, prevSrv := first, serve(t, first, 0)
	var cookies []uint64
	for i := range generations {
		f := listen(t, addr)
		s := serve(t, f, byte(i+1))
		mustRoute(t, g, f, nil, 0)
		if got := dialN(t, addr, each, 1); got[byte(i+1)] != each {
			t.Fatalf("generation %d: %v, want %d on it", i+1, got, each)
		}
		prevSrv.stop()
		prev.Close()
		prev, prevSrv = f, s
		cookies = append(cookies, cookie(t, f))
	}
	steered, err := g.Steered()
	if err != nil {
		t.Fatal(err)
	}
	for i, c := range cookies {
		if !countsAbout(steered[c], each) {
			t.Fatalf("generation %d (cookie %d): Steered %d, want %d", i+1, c, steered[c], each)
		}
	}
}
