package steer

import (
	"errors"
	"fmt"
	"os"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// Files are a Group's kernel objects as files, for the fd store and the
// tableflip hand-over: a later agentd Opens them and steers on with the
// same maps. It must: the kernel lets a socket be in one sockarray only, so
// a fresh Group could not route to a socket the attached program's map
// still holds (ErrInOtherMap), and bpffs pinning is unreliable under
// agentd.service's hardening.
type Files struct {
	Prog, Socks, Routes, Counts *os.File
}

// Names are the names Files uses for the fd store (FDNAME=PREFIX.NAME).
func (fs Files) Names() map[string]*os.File {
	return map[string]*os.File{"prog": fs.Prog, "socks": fs.Socks, "routes": fs.Routes, "counts": fs.Counts}
}

// Close closes the files (not the Group's own fds).
func (fs Files) Close() error {
	var errs []error
	for _, f := range []*os.File{fs.Prog, fs.Socks, fs.Routes, fs.Counts} {
		if f != nil {
			errs = append(errs, f.Close())
		}
	}
	return errors.Join(errs...)
}

// Files returns close-on-exec duplicates of the program's and the maps'
// fds; the caller closes them.
func (g *Group) Files() (Files, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return Files{}, ErrClosed
	}
	var fs Files
	for _, s := range []struct {
		dst  **os.File
		fd   int
		name string
	}{
		{&fs.Prog, g.prog.FD(), "steer-prog"},
		{&fs.Socks, g.socks.FD(), "steer-socks"},
		{&fs.Routes, g.routes.FD(), "steer-routes"},
		{&fs.Counts, g.counts.FD(), "steer-counts"},
	} {
		fd, err := unix.FcntlInt(uintptr(s.fd), unix.F_DUPFD_CLOEXEC, 0)
		if err != nil {
			fs.Close()
			return Files{}, fmt.Errorf("dup the %s fd: %w", s.name, err)
		}
		*s.dst = os.NewFile(uintptr(fd), s.name)
	}
	return fs, nil
}

// Open rebuilds a Group from another Group's Files (a previous agentd's,
// from the fd store or the hand-over). The files stay the caller's. Which
// socket is in which slot is read back from the sockarray (a lookup answers
// the socket's cookie), so Route knows the sockets routed already by
// cookie; their counts go on; the totals of sockets that left the routes
// before are not kept.
func Open(fs Files) (*Group, error) {
	g := &Group{totals: map[uint64]uint64{}}
	var err error
	if g.prog, err = openProg(fs.Prog); err != nil {
		return nil, err
	}
	for _, m := range []struct {
		dst  **ebpf.Map
		f    *os.File
		what string
		typ  ebpf.MapType
		max  uint32
	}{
		{&g.socks, fs.Socks, "sockarray", ebpf.ReusePortSockArray, numSlots},
		{&g.routes, fs.Routes, "routes map", ebpf.Array, 1},
		{&g.counts, fs.Counts, "counters", ebpf.PerCPUArray, numSlots},
	} {
		if *m.dst, err = openMap(m.f, m.what, m.typ, m.max); err != nil {
			g.closeAll()
			return nil, err
		}
	}
	if err := g.readSlots(); err != nil {
		g.closeAll()
		return nil, err
	}
	return g, nil
}

// readSlots learns which socket is in which slot from the sockarray.
func (g *Group) readSlots() error {
	for i := range numSlots {
		var c uint64
		switch err := g.socks.Lookup(uint32(i), &c); {
		case errors.Is(err, ebpf.ErrKeyNotExist):
		case err != nil:
			return fmt.Errorf("open steering: read slot %d: %w", i, err)
		default:
			g.slots[i] = c
			g.next = (i + 1) % numSlots
			g.routed = true
		}
	}
	return nil
}

// dupFile dups f's fd after checking it is a BPF object of the kind
// (bpf-prog or bpf-map): the kernel answers an object-info query on a map
// fd with a map's info, which reads as some program's.
func dupFile(f *os.File, what, kind string) (int, error) {
	if f == nil {
		return 0, fmt.Errorf("open steering: no %s file", what)
	}
	var dup int
	err := control(f, func(fd int) error {
		link, err := os.Readlink(fmt.Sprintf("/proc/self/fd/%d", fd))
		if err != nil {
			return err
		}
		if link != "anon_inode:"+kind {
			return fmt.Errorf("%s is %s, not a %s", f.Name(), link, kind)
		}
		dup, err = unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("open steering: dup the %s: %w", what, err)
	}
	return dup, nil
}

func openProg(f *os.File) (*ebpf.Program, error) {
	fd, err := dupFile(f, "program", "bpf-prog")
	if err != nil {
		return nil, err
	}
	p, err := ebpf.NewProgramFromFD(fd) // owns fd now, closes it on error
	if err != nil {
		return nil, fmt.Errorf("open steering: %s is not a BPF program: %w", f.Name(), err)
	}
	if p.Type() != ebpf.SkReuseport {
		p.Close()
		return nil, fmt.Errorf("open steering: %s is a %s program, not a steering one", f.Name(), p.Type())
	}
	return p, nil
}

func openMap(f *os.File, what string, typ ebpf.MapType, max uint32) (*ebpf.Map, error) {
	fd, err := dupFile(f, what, "bpf-map")
	if err != nil {
		return nil, err
	}
	m, err := ebpf.NewMapFromFD(fd)
	if err != nil {
		return nil, fmt.Errorf("open steering: %s is not a BPF map: %w", f.Name(), err)
	}
	if m.Type() != typ || m.KeySize() != 4 || m.ValueSize() != 8 || m.MaxEntries() != max {
		m.Close()
		return nil, fmt.Errorf("open steering: %s is not the %s (a %s map, key %d bytes, value %d, %d entries)",
			f.Name(), what, m.Type(), m.KeySize(), m.ValueSize(), m.MaxEntries())
	}
	return m, nil
}
