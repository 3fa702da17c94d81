package steer

import (
	"errors"
	"os"
	"testing"
	"time"
)

// A restarted agentd Opens the Files of the previous one's Group and steers
// on: it knows the routed socket by cookie, moves the routes away from it
// and back (a fresh Group could not: ErrInOtherMap), and keeps its count.
func TestOpenFromFiles(t *testing.T) {
	needSteering(t)
	a := listen(t, "127.0.0.1:0")
	addr := addrOf(t, a)
	b := listen(t, addr)
	serve(t, a, 'A')
	serve(t, b, 'B')
	g1, err := New("handover")
	if err != nil {
		t.Fatal(err)
	}
	mustRoute(t, g1, a, nil, 0)
	if err := g1.Attach(a); err != nil {
		t.Fatal(err)
	}
	if got := dialN(t, addr, 100, 2); got['A'] != 100 {
		t.Fatalf("before the hand-over: %v", got)
	}
	fs, err := g1.Files()
	if err != nil {
		t.Fatal(err)
	}
	g1.Close()

	g2, err := Open(fs)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g2.Close() })
	if err := fs.Close(); err != nil {
		t.Fatal(err)
	}
	if got := dialN(t, addr, 100, 2); got['A'] != 100 {
		t.Fatalf("after Open, before any Route: %v, want the old routes kept", got)
	}
	mustRoute(t, g2, b, a, 10)
	mustRoute(t, g2, b, nil, 0)
	if got := dialN(t, addr, 100, 2); got['B'] != 100 {
		t.Fatalf("after Route(B): %v", got)
	}
	mustRoute(t, g2, a, nil, 0)
	if got := dialN(t, addr, 100, 2); got['A'] != 100 {
		t.Fatalf("after Route(A) again: %v", got)
	}
	steered, err := g2.Steered()
	if err != nil {
		t.Fatal(err)
	}
	// A's 200 before the second Route(A) were counted in its first slot,
	// the 100 after in a new one.
	if !countsAbout(steered[cookie(t, a)], 300) || !countsAbout(steered[cookie(t, b)], 100) {
		t.Fatalf("Steered = %v, want A %d: 300, B %d: 100", steered, cookie(t, a), cookie(t, b))
	}
	// Attach after Open: the program replaces itself, harmlessly.
	if err := g2.Attach(b); err != nil {
		t.Fatal(err)
	}

	// Files of the wrong kind are refused.
	fs2, err := g2.Files()
	if err != nil {
		t.Fatal(err)
	}
	defer fs2.Close()
	for name, bad := range map[string]Files{
		"maps swapped": {Prog: fs2.Prog, Socks: fs2.Routes, Routes: fs2.Socks, Counts: fs2.Counts},
		"not bpf":      {Prog: os.Stdin, Socks: fs2.Socks, Routes: fs2.Routes, Counts: fs2.Counts},
		"map not prog": {Prog: fs2.Counts, Socks: fs2.Socks, Routes: fs2.Routes, Counts: fs2.Counts},
		"missing":      {Prog: fs2.Prog},
	} {
		if g, err := Open(bad); err == nil {
			g.Close()
			t.Errorf("Open with %s succeeded", name)
		} else {
			t.Logf("%s: %v", name, err)
		}
	}
}

// New, Files, Open and Close leave no fd behind.
func TestNoFDLeak(t *testing.T) {
	needSteering(t)
	cycle := func() {
		// A socket per cycle: a closed Group's map is freed by the kernel
		// a moment later, and holds its socket until then.
		a, err := Listen("tcp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer a.Close()
		g, err := New("leak")
		if err != nil {
			t.Fatal(err)
		}
		mustRoute(t, g, a, nil, 0)
		fs, err := g.Files()
		if err != nil {
			t.Fatal(err)
		}
		g2, err := Open(fs)
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range []func() error{fs.Close, g.Close, g2.Close} {
			if err := c(); err != nil {
				t.Fatal(err)
			}
		}
	}
	cycle() // the library's one-time probes and caches
	before := openFDs(t)
	for range 10 {
		cycle()
	}
	if after := openFDs(t); after != before {
		t.Fatalf("%d fds open before 10 cycles, %d after", before, after)
	}
}

func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// A restart that lost the maps: the old program is detached, and once the
// kernel has freed its map a new Group routes to the same socket. Until
// then Route answers ErrInOtherMap and changes nothing.
func TestDetachThenNewGroup(t *testing.T) {
	needSteering(t)
	a := listen(t, "127.0.0.1:0")
	addr := addrOf(t, a)
	b := listen(t, addr)
	serve(t, a, 'A')
	serve(t, b, 'B')
	g1, err := New("old")
	if err != nil {
		t.Fatal(err)
	}
	mustRoute(t, g1, a, nil, 0)
	if err := g1.Attach(a); err != nil {
		t.Fatal(err)
	}
	g1.Close()
	if got := dialN(t, addr, 100, 2); got['A'] != 100 {
		t.Fatalf("after the old Group's Close: %v, want all on A still", got)
	}
	g2 := newTestGroup(t)
	if err := g2.Route(a, nil, 0); !errors.Is(err, ErrInOtherMap) {
		t.Fatalf("Route to a socket the attached program's map holds = %v, want ErrInOtherMap", err)
	}
	if err := Detach(b); err != nil { // any socket of the group
		t.Fatal(err)
	}
	if err := Detach(b); err != nil {
		t.Fatalf("Detach without a program: %v", err)
	}
	start := time.Now()
	waitFor(t, "the old map's release", func() (bool, error) {
		err := g2.Route(a, nil, 0)
		if errors.Is(err, ErrInOtherMap) {
			return false, nil
		}
		return err == nil, err
	})
	t.Logf("the kernel released the socket %v after Detach", time.Since(start))
	if err := g2.Attach(a); err != nil {
		t.Fatal(err)
	}
	if got := dialN(t, addr, 100, 2); got['A'] != 100 {
		t.Fatalf("after the new Group's Attach: %v, want all on A", got)
	}
}
