package steer

import (
	"errors"
	"fmt"
	"slices"

	"github.com/cilium/ebpf"
)

// ErrNotFound: no steering map of this host holds the socket.
var ErrNotFound = errors.New("no steering map holds the socket")

// Find rebuilds the Group whose sockarray holds the socket with cookie,
// from the kernel's own list of BPF objects: the way back when the
// previous agentd's Files are lost (it crashed, and no fd store kept
// them: agentd without systemd). The attached program keeps its maps alive,
// and a socket can be in one sockarray only, so a new Group could not
// route to the sockets the old one holds; this one can. Needs the same
// privilege as loading the program (CAP_SYS_ADMIN to walk the IDs).
func Find(cookie uint64) (*Group, error) {
	if cookie == 0 {
		return nil, ErrNotFound
	}
	socks, err := findSockarray(cookie)
	if err != nil {
		return nil, err
	}
	info, err := socks.Info()
	if err != nil {
		socks.Close()
		return nil, fmt.Errorf("find steering: %w", err)
	}
	sid, _ := info.ID()
	g := &Group{totals: map[uint64]uint64{}, socks: socks}
	for id := ebpf.ProgramID(0); ; {
		id, err = ebpf.ProgramGetNextID(id)
		if err != nil {
			break
		}
		p, err := ebpf.NewProgramFromID(id)
		if err != nil {
			continue
		}
		pi, err := p.Info()
		ids, ok := pi.MapIDs()
		if err != nil || !ok || pi.Type != ebpf.SkReuseport || !slices.Contains(ids, sid) {
			p.Close()
			continue
		}
		g.prog = p
		for _, mid := range ids {
			m, err := ebpf.NewMapFromID(mid)
			if err != nil {
				continue
			}
			mi, err := m.Info()
			switch {
			case err != nil || mid == sid:
				m.Close()
			case mi.Type == ebpf.Array && mi.MaxEntries == 1 && g.routes == nil:
				g.routes = m
			case mi.Type == ebpf.PerCPUArray && mi.MaxEntries == numSlots && g.counts == nil:
				g.counts = m
			default:
				m.Close()
			}
		}
		break
	}
	if g.prog == nil || g.routes == nil || g.counts == nil {
		g.closeAll()
		return nil, fmt.Errorf("find steering: the program or a map of the sockarray holding cookie %d is gone: %w", cookie, ErrNotFound)
	}
	if err := g.readSlots(); err != nil {
		g.closeAll()
		return nil, err
	}
	return g, nil
}

// findSockarray walks the host's BPF maps for a sockarray of our size
// with the socket in a slot.
func findSockarray(cookie uint64) (*ebpf.Map, error) {
	for id := ebpf.MapID(0); ; {
		var err error
		id, err = ebpf.MapGetNextID(id)
		if err != nil {
			return nil, ErrNotFound
		}
		m, err := ebpf.NewMapFromID(id)
		if err != nil {
			continue
		}
		mi, err := m.Info()
		if err != nil || mi.Type != ebpf.ReusePortSockArray || mi.MaxEntries != numSlots || mi.ValueSize != 8 {
			m.Close()
			continue
		}
		for i := range uint32(numSlots) {
			var c uint64
			if m.Lookup(i, &c) == nil && c == cookie {
				return m, nil
			}
		}
		m.Close()
	}
}
