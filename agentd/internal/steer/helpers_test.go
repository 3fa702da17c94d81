package steer

import (
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestMain turns the test binary into a helper process when asked: the
// unprivileged Supported() check runs in a child as another user.
func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) == "supported" {
		if err := Supported(); err != nil {
			fmt.Print(err)
		} else {
			fmt.Print("nil")
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

const helperEnv = "STEER_TEST_HELPER"

// needSteering skips a test where this process cannot steer, with the
// reason Supported gives. As root on a kernel that has what the program
// needs (CI, this machine) it fails instead: a program the verifier
// refuses must not pass for a skip.
func needSteering(t *testing.T) {
	t.Helper()
	err := Supported()
	switch {
	case err == nil:
	case os.Geteuid() == 0 && kernelAtLeast(5, 14):
		t.Fatalf("root on kernel %s, yet: %v", release(), err)
	default:
		t.Skip(err)
	}
}

// listen is Listen for a test: closed at cleanup.
func listen(t *testing.T, address string) *os.File {
	t.Helper()
	f, err := Listen("tcp4", address)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

func addrOf(t *testing.T, f *os.File) string {
	t.Helper()
	info, err := inspect(f)
	if err != nil {
		t.Fatal(err)
	}
	return info.addr.String()
}

func newTestGroup(t *testing.T) *Group {
	t.Helper()
	g, err := New(t.Name())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.Close() })
	return g
}

// server accepts on a socket and answers each connection with its mark
// (one byte) before closing it: the client learns which socket took it.
type server struct {
	mark     byte
	accepted atomic.Int64
	l        net.Listener
	wg       sync.WaitGroup
}

// serve accepts on (a dup of) f until cleanup.
func serve(t *testing.T, f *os.File, mark byte) *server {
	t.Helper()
	l, err := net.FileListener(f)
	if err != nil {
		t.Fatal(err)
	}
	s := &server{mark: mark, l: l}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			s.accepted.Add(1)
			c.Write([]byte{mark})
			c.Close()
		}
	}()
	t.Cleanup(s.stop)
	return s
}

func (s *server) stop() {
	s.l.Close()
	s.wg.Wait()
}

// dial opens a connection and returns the mark of the socket that took it.
func dial(addr string) (byte, error) {
	c, err := net.DialTimeout("tcp4", addr, 10*time.Second)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	var b [1]byte
	if _, err := io.ReadFull(c, b[:]); err != nil {
		return 0, fmt.Errorf("read the mark: %w", err)
	}
	return b[0], nil
}

// dialN makes n connections from `workers` clients at once and counts them
// by mark; any failure fails the test.
func dialN(t *testing.T, addr string, n, workers int) map[byte]int {
	t.Helper()
	var mu sync.Mutex
	marks := map[byte]int{}
	var errs []error
	var next atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(n) {
				m, err := dial(addr)
				mu.Lock()
				if err != nil {
					errs = append(errs, err)
				} else {
					marks[m]++
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if len(errs) > 0 {
		t.Fatalf("%d of %d connections failed, the first: %v", len(errs), n, errs[0])
	}
	return marks
}

// waitFor polls cond until it holds, for at most 20 s: for states the
// kernel does not announce (an accept queue's length).
func waitFor(t *testing.T, what string, cond func() (bool, error)) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		ok, err := cond()
		if err != nil {
			t.Fatalf("waiting for %s: %v", what, err)
		}
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func cookie(t *testing.T, f *os.File) uint64 {
	t.Helper()
	c, err := Cookie(f)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// countsAbout tells whether Steered's count for a socket matches the
// connections it accepted. The program counts selections, and a segment
// to the group's port that matches no connection runs it too. The tests
// listen on ephemeral ports, which were client ports of earlier
// connections a moment ago, whose late segments then meet the group (seen:
// up to 0.3 % over after a few thousand connections of earlier runs in
// the same process). So a count may exceed the connections a little, never
// fall short.
func countsAbout(steered uint64, accepted int) bool {
	a := uint64(accepted)
	return steered >= a && steered <= a+a/100+3
}

func mustRoute(t *testing.T, g *Group, primary, canary *os.File, pct float64) {
	t.Helper()
	if err := g.Route(primary, canary, pct); err != nil {
		t.Fatal(err)
	}
}
