package sockets

import (
	"testing"

	"golang.org/x/sys/unix"
)

// A sibling has its group's family and V6ONLY: an IPv4 socket (a socket
// unit's 0.0.0.0:8080) gets an IPv4 sibling, not the dual-stack IPv6
// socket Go makes for "tcp" on 0.0.0.0, which would be in another group.
func TestSibling(t *testing.T) {
	for _, c := range []struct {
		network, addr string
		family        int
	}{
		{"tcp4", "0.0.0.0:0", unix.AF_INET},
		{"tcp", "0.0.0.0:0", unix.AF_INET6}, // dual stack
		{"tcp6", "[::1]:0", unix.AF_INET6},
	} {
		spec := Spec{Type: "web", Name: "web", Network: c.network, Address: c.addr}
		first, err := listenReuse(spec, c.network, c.addr)
		if err != nil {
			t.Fatalf("%s %s: %v", c.network, c.addr, err)
		}
		sib, err := first.Sibling()
		if err != nil {
			t.Fatalf("%s %s: sibling: %v", c.network, c.addr, err)
		}
		for _, h := range []*Held{first, sib} {
			sa, _ := unix.Getsockname(Fd(h.File))
			family := unix.AF_INET
			if _, ok := sa.(*unix.SockaddrInet6); ok {
				family = unix.AF_INET6
			}
			if family != c.family || h.Bound() != first.Bound() || !h.ReusePort() {
				t.Errorf("%s %s: socket family %d bound %s reuseport %v; want family %d at %s with SO_REUSEPORT", c.network, c.addr, family, h.Bound(), h.ReusePort(), c.family, first.Bound())
			}
		}
		v1, _ := unix.GetsockoptInt(Fd(first.File), unix.IPPROTO_IPV6, unix.IPV6_V6ONLY)
		v2, _ := unix.GetsockoptInt(Fd(sib.File), unix.IPPROTO_IPV6, unix.IPV6_V6ONLY)
		if v1 != v2 {
			t.Errorf("%s %s: V6ONLY %d, sibling's %d", c.network, c.addr, v1, v2)
		}
		first.Close()
		sib.Close()
	}
}
