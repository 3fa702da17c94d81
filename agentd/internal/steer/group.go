package steer

import (
	"errors"
	"fmt"
	"math"
	"net/netip"
	"os"
	"sync"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// Group steers one reuseport group: the program, its three maps, and which
// socket sits in which slot of the sockarray.
type Group struct {
	mu     sync.Mutex
	closed bool
	prog   *ebpf.Program
	socks  *ebpf.Map // REUSEPORT_SOCKARRAY: slot → socket
	routes *ebpf.Map // array[1] of u64: the routes word
	counts *ebpf.Map // per-CPU array: slot → connections steered to the slot's socket

	// addr is the group's address, set by the first Route or Attach that
	// succeeds: every socket of a reuseport group is bound to it.
	addr netip.AddrPort
	// routed tells whether a Route succeeded (Attach wants one first).
	routed bool
	// slots[i] is the cookie of the socket in slot i, 0 when free.
	slots [numSlots]uint64
	// next is where the search for a free slot starts (round robin).
	next int
	// totals holds the counts of sockets that left their slot.
	totals map[uint64]uint64
}

// New creates the maps and loads the program; nothing is attached yet.
// name names the kernel objects (bpftool shows them), sanitised and
// truncated to what the kernel takes.
func New(name string) (*Group, error) {
	return newGroup(name, ebpf.AttachSkReuseportSelectOrMigrate)
}

// newGroup loads the program for an attach type: tests load it with
// AttachSkReuseportSelect too, to show what the migrating case is worth.
func newGroup(name string, attach ebpf.AttachType) (*Group, error) {
	g := &Group{totals: map[uint64]uint64{}}
	var err error
	g.socks, err = ebpf.NewMap(&ebpf.MapSpec{
		Name: objName(name, "_sk"), Type: ebpf.ReusePortSockArray,
		// 8-byte values: a lookup from user space answers the socket's cookie.
		KeySize: 4, ValueSize: 8, MaxEntries: numSlots,
	})
	if err != nil {
		return nil, explain("create the sockarray", err)
	}
	g.routes, err = ebpf.NewMap(&ebpf.MapSpec{
		Name: objName(name, "_rt"), Type: ebpf.Array, KeySize: 4, ValueSize: 8, MaxEntries: 1,
	})
	if err != nil {
		g.closeAll()
		return nil, explain("create the routes map", err)
	}
	g.counts, err = ebpf.NewMap(&ebpf.MapSpec{
		Name: objName(name, "_ct"), Type: ebpf.PerCPUArray, KeySize: 4, ValueSize: 8, MaxEntries: numSlots,
	})
	if err != nil {
		g.closeAll()
		return nil, explain("create the counters", err)
	}
	g.prog, err = ebpf.NewProgramWithOptions(&ebpf.ProgramSpec{
		Name:         objName(name, ""),
		Type:         ebpf.SkReuseport,
		AttachType:   attach,
		Instructions: program(g.socks.FD(), g.routes.FD(), g.counts.FD()),
		// No helper it calls is GPL-only, so the string only has to be
		// true.
		License: "Proprietary",
	}, ebpf.ProgramOptions{})
	if err != nil {
		g.closeAll()
		return nil, explain("load the program", err)
	}
	return g, nil
}

// objName makes a kernel object name: at most 15 bytes of [A-Za-z0-9_.],
// suffix kept whole.
func objName(name, suffix string) string {
	b := []byte(name)
	for i, c := range b {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '.') {
			b[i] = '_'
		}
	}
	if max := 15 - len(suffix); len(b) > max {
		b = b[:max]
	}
	return string(b) + suffix
}

// Attach attaches the program to the reuseport group f is in
// (SO_ATTACH_REUSEPORT_EBPF). The kernel swaps the group's program under
// RCU: a connection meets the old program or the new one, never none, so a
// previous agentd's program is replaced without a refused connection. Call
// Route first: until then the program would leave every choice to the
// kernel's hash, old sockets included.
func (g *Group) Attach(f *os.File) error {
	info, err := inspect(f)
	if err != nil {
		return fmt.Errorf("attach steering: %w", err)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return ErrClosed
	}
	if !g.routed {
		return errors.New("attach steering: no routes yet (Route before Attach)")
	}
	if g.addr.IsValid() && info.addr != g.addr { // unknown after Open until a Route or Attach
		return fmt.Errorf("attach steering: %s is bound to %s, the group to %s: %w", f.Name(), info.addr, g.addr, ErrOtherGroup)
	}
	err = control(f, func(fd int) error {
		return unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ATTACH_REUSEPORT_EBPF, g.prog.FD())
	})
	if err != nil {
		return fmt.Errorf("attach steering to %s (%s): SO_ATTACH_REUSEPORT_EBPF: %w", f.Name(), info.addr, err)
	}
	g.addr = info.addr
	return nil
}

// Detach takes the steering program off the reuseport group f is in
// (SO_DETACH_REUSEPORT_BPF): from then on the kernel picks among the
// group's sockets by hash, old ones included. For turning steering off,
// and for a restart that lost the maps (no Files): the old program holds
// its sockarray, and the sockarray its sockets, until it is detached and
// the kernel has freed it (a moment later; Route says ErrInOtherMap until
// then). A group without a program is not an error.
func Detach(f *os.File) error {
	err := control(f, func(fd int) error {
		return unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_DETACH_REUSEPORT_BPF, 0)
	})
	if err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("detach steering from %s: %w", f.Name(), err)
	}
	return nil
}

// Route points new connections at primary, and a share of canaryPercent
// (0 to 100) at canary when it is not nil. In order: the sockets not
// routed yet go into free slots of the sockarray; one write of the routes
// word switches the program to them; the sockets no longer routed leave
// the sockarray (their counts kept for Steered). A failure before the
// switch undoes what it did: the routes stay as they were.
func (g *Group) Route(primary, canary *os.File, canaryPercent float64) error {
	if math.IsNaN(canaryPercent) || canaryPercent < 0 || canaryPercent > 100 {
		return fmt.Errorf("route: canary share %v%% is not between 0 and 100", canaryPercent)
	}
	if canary == nil && canaryPercent != 0 {
		return fmt.Errorf("route: a canary share of %v%% without a canary socket", canaryPercent)
	}
	if primary == nil {
		return fmt.Errorf("route: no primary socket: %w", ErrNotListener)
	}
	pi, err := inspect(primary)
	if err != nil {
		return fmt.Errorf("route to primary: %w", err)
	}
	ci := pi
	if canary != nil {
		if ci, err = inspect(canary); err != nil {
			return fmt.Errorf("route to canary: %w", err)
		}
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return ErrClosed
	}
	addr := g.addr
	if !addr.IsValid() {
		addr = pi.addr
	}
	for _, s := range []struct {
		f    *os.File
		info sockInfo
	}{{primary, pi}, {canary, ci}} {
		if s.f != nil && s.info.addr != addr {
			return fmt.Errorf("route: %s is bound to %s, the group to %s: %w", s.f.Name(), s.info.addr, addr, ErrOtherGroup)
		}
	}

	var added []int
	undo := func() {
		for _, i := range added {
			// Never selected: the routes word does not name it yet.
			_ = g.socks.Delete(uint32(i))
			g.slots[i] = 0
		}
	}
	pslot, isNew, err := g.place(primary, pi.cookie)
	if err != nil {
		return fmt.Errorf("route to primary: %w", err)
	}
	if isNew {
		added = append(added, pslot)
	}
	cslot := pslot
	if canary != nil {
		cslot, isNew, err = g.place(canary, ci.cookie)
		if err != nil {
			undo()
			return fmt.Errorf("route to canary: %w", err)
		}
		if isNew {
			added = append(added, cslot)
		}
	}

	var word uint64
	switch {
	case canary == nil || canaryPercent == 0:
		word = routesWord(uint32(pslot), uint32(pslot), 0)
	case canaryPercent == 100:
		// A 32-bit random number is always below no threshold short of
		// 2^32: swap the two instead, the primary still the fallback.
		word = routesWord(uint32(cslot), uint32(pslot), 0)
	default:
		word = routesWord(uint32(pslot), uint32(cslot), threshold(canaryPercent))
	}
	if err := g.routes.Update(uint32(0), word, ebpf.UpdateAny); err != nil {
		undo()
		return fmt.Errorf("route: write the routes: %w", err)
	}
	g.addr, g.routed = addr, true

	for i, c := range g.slots {
		if c != 0 && c != pi.cookie && c != ci.cookie {
			if err := g.vacate(i); err != nil {
				// The routes are switched already; the socket stays in its
				// slot, harmless (nothing names it) until a later Route.
				return fmt.Errorf("route: routes switched, but: %w", err)
			}
		}
	}
	return nil
}

// place puts the socket in a free slot unless it has one, and returns the
// slot and whether it is new.
func (g *Group) place(f *os.File, cookie uint64) (int, bool, error) {
	for i, c := range g.slots {
		if c == cookie {
			return i, false, nil
		}
	}
	for n := 0; n < numSlots; n++ {
		i := (g.next + n) % numSlots
		if g.slots[i] != 0 {
			continue
		}
		err := control(f, func(fd int) error {
			return g.socks.Update(uint32(i), uint64(fd), ebpf.UpdateAny)
		})
		switch {
		case errors.Is(err, unix.EBUSY):
			return 0, false, fmt.Errorf("%s (cookie %d): %w (the kernel allows one; reuse that group's maps, see Open)", f.Name(), cookie, ErrInOtherMap)
		case err != nil:
			return 0, false, fmt.Errorf("put %s (cookie %d) in the sockarray: %w", f.Name(), cookie, err)
		}
		g.slots[i] = cookie
		g.next = (i + 1) % numSlots
		return i, true, nil
	}
	return 0, false, fmt.Errorf("put %s in the sockarray: all %d slots taken", f.Name(), numSlots)
}

// vacate takes slot i's socket out of the sockarray, adds its count to
// its total and zeroes the counter for the slot's next socket.
func (g *Group) vacate(i int) error {
	cookie := g.slots[i]
	// Gone already when the socket closed: the kernel removes it.
	if err := g.socks.Delete(uint32(i)); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("remove cookie %d from the sockarray: %w", cookie, err)
	}
	n, err := g.count(i)
	if err != nil {
		return err
	}
	zero := make([]uint64, len(n.perCPU))
	if err := g.counts.Update(uint32(i), zero, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("reset the counter of slot %d: %w", i, err)
	}
	g.totals[cookie] += n.sum
	g.slots[i] = 0
	return nil
}

type slotCount struct {
	perCPU []uint64
	sum    uint64
}

func (g *Group) count(i int) (slotCount, error) {
	var c slotCount
	if err := g.counts.Lookup(uint32(i), &c.perCPU); err != nil {
		return c, fmt.Errorf("read the counter of slot %d: %w", i, err)
	}
	for _, v := range c.perCPU {
		c.sum += v
	}
	return c, nil
}

// Steered returns how many new connections the program sent to each
// socket since New (or Open), keyed by cookie, sockets no longer routed
// included. Connections a closing listener handed on count for the socket
// that took them. The counts are the program's selections, a little above
// the connections accepted (see the package doc's traps), never below.
func (g *Group) Steered() (map[uint64]uint64, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return nil, ErrClosed
	}
	out := make(map[uint64]uint64, len(g.totals)+2)
	for c, n := range g.totals {
		out[c] = n
	}
	for i, c := range g.slots {
		if c == 0 {
			continue
		}
		n, err := g.count(i)
		if err != nil {
			return nil, fmt.Errorf("steered: %w", err)
		}
		out[c] += n.sum
	}
	return out, nil
}

// Close closes this process's fds of the program and maps. An attached
// program stays: the group holds it (and it its maps) and it steers with
// the last routes until another program replaces it or the group's last
// socket closes. Close is idempotent.
func (g *Group) Close() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return nil
	}
	g.closed = true
	return g.closeAll()
}

func (g *Group) closeAll() error {
	var errs []error
	if g.prog != nil {
		errs = append(errs, g.prog.Close())
	}
	for _, m := range []*ebpf.Map{g.socks, g.routes, g.counts} {
		if m != nil {
			errs = append(errs, m.Close())
		}
	}
	return errors.Join(errs...)
}
