package steer

import (
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"
)

// Connections queued on a listener when it closes for good move to the
// group's routed socket and are served there, with the program's
// SELECT_OR_MIGRATE attach type; without a program, or with a program of
// the plain SELECT type, the same close resets them: the controls show the
// test fails when migration is missing.
func TestMigrationOnClose(t *testing.T) {
	needSteering(t)
	if v, err := os.ReadFile("/proc/sys/net/ipv4/tcp_migrate_req"); err != nil || strings.TrimSpace(string(v)) != "0" {
		// With the sysctl on the kernel migrates by hash without any
		// program, and the controls cannot fail.
		t.Skipf("net.ipv4.tcp_migrate_req is %q (%v): the controls need 0", v, err)
	}
	const queued = 20
	for _, tc := range []struct {
		name     string
		program  bool
		attach   ebpf.AttachType
		migrated bool
	}{
		{"select_or_migrate", true, ebpf.AttachSkReuseportSelectOrMigrate, true},
		{"control_no_program", false, 0, false},
		{"control_select_only", true, ebpf.AttachSkReuseportSelect, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := listen(t, "127.0.0.1:0")
			addr := addrOf(t, a)
			b := listen(t, addr)
			var g *Group
			if tc.program {
				var err error
				if g, err = newGroup("migrate", tc.attach); err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { g.Close() })
				mustRoute(t, g, a, nil, 0)
				if err := g.Attach(a); err != nil {
					t.Fatal(err)
				}
			}

			// Without a program the kernel picks by hash: the clients must
			// land on A, so B joins the group only after they queued.
			if !tc.program {
				b.Close()
			}
			var clients []net.Conn
			t.Cleanup(func() {
				for _, c := range clients {
					c.Close()
				}
			})
			for range queued {
				c, err := net.DialTimeout("tcp4", addr, 10*time.Second)
				if err != nil {
					t.Fatal(err)
				}
				clients = append(clients, c)
			}
			waitFor(t, "the connections in A's accept queue", func() (bool, error) {
				n, err := Queued(a)
				return n == queued, err
			})
			if tc.program {
				mustRoute(t, g, b, nil, 0)
			} else {
				b = listen(t, addr)
			}
			// B answers what it reads: "ping" → "pong".
			lb, err := net.FileListener(b)
			if err != nil {
				t.Fatal(err)
			}
			accepted := make(chan int, 1)
			go func() {
				n := 0
				defer func() { accepted <- n }()
				for {
					c, err := lb.Accept()
					if err != nil {
						return
					}
					n++
					go func() {
						defer c.Close()
						c.SetDeadline(time.Now().Add(20 * time.Second))
						var buf [4]byte
						if _, err := io.ReadFull(c, buf[:]); err == nil && string(buf[:]) == "ping" {
							c.Write([]byte("pong"))
						}
					}()
				}
			}()

			// A's last fd: the kernel hands its queue on, or resets it.
			if err := a.Close(); err != nil {
				t.Fatal(err)
			}
			answered, reset := 0, 0
			for i, c := range clients {
				c.SetDeadline(time.Now().Add(20 * time.Second))
				var buf [4]byte
				_, err := c.Write([]byte("ping"))
				if err == nil {
					_, err = io.ReadFull(c, buf[:])
				}
				switch {
				case err == nil && string(buf[:]) == "pong":
					answered++
				case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
					reset++
				default:
					t.Errorf("client %d: %q, %v", i, buf, err)
				}
			}
			lb.Close()
			n := <-accepted
			t.Logf("%d queued on A when it closed: %d answered by B (B accepted %d), %d reset", queued, answered, n, reset)
			if tc.migrated {
				if answered != queued || n != queued {
					t.Fatalf("%d answered, %d accepted by B; want all %d moved to B", answered, n, queued)
				}
				steered, err := g.Steered()
				if err != nil {
					t.Fatal(err)
				}
				// The program chose B for each connection it moved.
				if got := steered[cookie(t, b)]; !countsAbout(got, queued) {
					t.Fatalf("Steered counts %d for B, want %d", got, queued)
				}
			} else if reset != queued {
				t.Fatalf("control: %d of %d reset; the control must show the loss", reset, queued)
			}
		})
	}
}
