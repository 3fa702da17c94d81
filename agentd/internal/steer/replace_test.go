package steer

import (
	"context"
	"errors"
	"math"
	"net"
	"os"
	"sync"
	"testing"
)

// An agentd restart: a new Group attaches over the old one's program while
// a client connects without pause; no connection fails, the new routes
// hold from Attach on, and closing the old Group changes nothing.
func TestReplaceProgram(t *testing.T) {
	needSteering(t)
	a := listen(t, "127.0.0.1:0")
	addr := addrOf(t, a)
	b := listen(t, addr)
	serve(t, a, 'A')
	serve(t, b, 'B')
	g1 := newTestGroup(t)
	mustRoute(t, g1, a, nil, 0)
	if err := g1.Attach(a); err != nil {
		t.Fatal(err)
	}

	// The client loop runs from before the switch to after g1.Close.
	stop := make(chan struct{})
	var loop struct {
		sync.Mutex
		marks map[byte]int
		errs  []error
	}
	loop.marks = map[byte]int{}
	firstA := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; i < 100000; i++ {
			select {
			case <-stop:
				return
			default:
			}
			m, err := dial(addr)
			loop.Lock()
			if err != nil {
				loop.errs = append(loop.errs, err)
			} else {
				loop.marks[m]++
				if m == 'A' && loop.marks['A'] == 1 {
					close(firstA)
				}
			}
			loop.Unlock()
		}
	}()
	t.Cleanup(func() {
		select {
		case <-stop:
		default:
			close(stop)
		}
		<-done
	})
	<-firstA

	g2 := newTestGroup(t)
	mustRoute(t, g2, b, nil, 0)
	// Through A's file: any socket of the group will do.
	if err := g2.Attach(a); err != nil {
		t.Fatal(err)
	}
	if got := dialN(t, addr, 200, 2); got['B'] != 200 {
		t.Fatalf("after the new program's Attach: %v, want 200 on B", got)
	}
	if err := g1.Close(); err != nil {
		t.Fatal(err)
	}
	if got := dialN(t, addr, 200, 2); got['B'] != 200 {
		t.Fatalf("after the old Group's Close: %v, want 200 on B", got)
	}
	close(stop)
	<-done
	loop.Lock()
	defer loop.Unlock()
	t.Logf("client loop through the switch: %v, %d failed", loop.marks, len(loop.errs))
	if len(loop.errs) > 0 {
		t.Fatalf("%d connections failed during the switch, the first: %v", len(loop.errs), loop.errs[0])
	}
	steered, err := g2.Steered()
	if err != nil {
		t.Fatal(err)
	}
	if steered[cookie(t, b)] < 400 {
		t.Fatalf("g2.Steered = %v, want at least 400 for B", steered)
	}
}

// Bad input to Route gets an error that errors.Is can tell, and changes
// nothing: the connections keep going where they went.
func TestRouteRefusesBadInput(t *testing.T) {
	needSteering(t)
	a := listen(t, "127.0.0.1:0")
	addr := addrOf(t, a)
	b := listen(t, addr)
	serve(t, a, 'A')
	serve(t, b, 'B')
	g := newTestGroup(t)
	mustRoute(t, g, a, nil, 0)
	if err := g.Attach(a); err != nil {
		t.Fatal(err)
	}

	// A TCP socket without SO_REUSEPORT, on another port.
	plain := listenFile(t, false)
	// Go's default: MPTCP where the kernel has it, which the sockarray
	// refuses.
	goDefault := listenFile(t, true)
	other := listen(t, "127.0.0.1:0") // another address: another group
	udp, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	udpFile, err := udp.(*net.UDPConn).File()
	udp.Close()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { udpFile.Close() })
	notSock, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { notSock.Close() })
	// A socket another Group holds: the kernel lets it be in one map.
	held := listen(t, addr)
	gOther := newTestGroup(t)
	mustRoute(t, gOther, held, nil, 0)

	for _, tc := range []struct {
		name            string
		primary, canary *os.File
		pct             float64
		want            error
	}{
		{"no SO_REUSEPORT", plain, nil, 0, ErrNoReusePort},
		{"canary without SO_REUSEPORT", b, plain, 10, ErrNoReusePort},
		{"Go's default listener", goDefault, nil, 0, nil},
		{"another group", other, nil, 0, ErrOtherGroup},
		{"canary of another group", b, other, 10, ErrOtherGroup},
		{"udp", udpFile, nil, 0, ErrNotListener},
		{"not a socket", notSock, nil, 0, ErrNotListener},
		{"no primary", nil, b, 10, ErrNotListener},
		{"in another group's map", held, nil, 0, ErrInOtherMap},
		{"canary in another group's map", b, held, 10, ErrInOtherMap},
		{"share above 100", a, b, 101, nil},
		{"negative share", a, b, -1, nil},
		{"NaN share", a, b, math.NaN(), nil},
		{"share without a canary", b, nil, 10, nil},
	} {
		err := g.Route(tc.primary, tc.canary, tc.pct)
		if err == nil || tc.want != nil && !errors.Is(err, tc.want) {
			t.Errorf("%s: Route = %v, want %v", tc.name, err, tc.want)
		} else {
			t.Logf("%s: %v", tc.name, err)
		}
	}
	if got := dialN(t, addr, 200, 4); got['A'] != 200 {
		t.Fatalf("after the refused Routes: %v, want all 200 still on A", got)
	}
	if err := g.Attach(other); !errors.Is(err, ErrOtherGroup) {
		t.Fatalf("Attach to another group's socket = %v, want ErrOtherGroup", err)
	}
	if err := newTestGroup(t).Attach(a); err == nil {
		t.Fatal("Attach before any Route succeeded")
	}
	steered, err := g.Steered()
	if err != nil {
		t.Fatal(err)
	}
	if len(steered) != 1 || !countsAbout(steered[cookie(t, a)], 200) {
		t.Fatalf("Steered = %v, want only A (%d) with 200", steered, cookie(t, a))
	}
	g.Close()
	if err := g.Route(a, nil, 0); !errors.Is(err, ErrClosed) {
		t.Fatalf("Route after Close = %v, want ErrClosed", err)
	}
}

// listenFile binds a listener without SO_REUSEPORT, MPTCP as Go's default
// or plain TCP.
func listenFile(t *testing.T, mptcp bool) *os.File {
	t.Helper()
	var lc net.ListenConfig
	if !mptcp {
		lc.SetMultipathTCP(false)
	}
	l, err := lc.Listen(context.Background(), "tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	f, err := l.(*net.TCPListener).File()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}
