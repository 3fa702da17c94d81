// Package diagnose tells why a process that should become ready is not:
// the traps a new app falls into with socket activation. It looks at what
// the kernel shows of a process group (the sockets its processes hold, the
// files they wait on through epoll, the sockets they listen on themselves,
// the activation variables each one was started with) and judges which
// trap, if any, the group is in.
//
// It only reads /proc and asks nothing of the process: a look costs a walk
// of /proc/*/stat for the group's members and one read of /proc/net/tcp,
// tcp6 and unix. It needs the right to read the processes' fd tables and
// environments (root, or the same user); without it there is no verdict.
package diagnose

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// Socket is one socket agentd passed to the process.
type Socket struct {
	Name  string // its LISTEN_FDNAMES name: "web", "probe"
	FD    int    // its number in the process: 3, 4, …
	Inode uint64
}

// Fork is a process of the group that received LISTEN_FDS while
// LISTEN_PID names another process: sd_listen_fds(3) and every library
// modelled on it ignore the fds then.
type Fork struct {
	PID, ListenPID int
	Comm           string // its command name
	ListenComm     string // the command name of the process LISTEN_PID names
}

// Seen is what one look at a process group found.
type Seen struct {
	// Members are the group's processes.
	Members int
	// Held are the socket inodes some process of the group has an fd of.
	Held map[uint64]bool
	// Polled are the inodes some process of the group registered in an
	// epoll instance: what it waits on, so what it serves. A process that
	// blocks in accept(2) or uses select(2) or poll(2) shows nothing here.
	Polled map[uint64]bool
	// Epoll is whether some process of the group has an epoll instance at
	// all (with something registered).
	Epoll bool
	// Own are the addresses of the listening sockets the group holds that
	// agentd did not pass: ports it bound itself.
	Own []string
	// Forked is a process that got the fds under a LISTEN_PID not its own.
	Forked *Fork
}

// Look reads what the processes of group pgid hold and wait on. passed are
// the sockets agentd gave the group (left out of Own). A group whose fd
// tables cannot be read is an error (fs.ErrPermission): no verdict.
func Look(pgid int, passed []Socket) (Seen, error) {
	return LookAt(pgid, GroupMembers(pgid), passed)
}

// LookAt is Look with the group's members already known (from Groups,
// shared by callers that look at many groups at once).
func LookAt(pgid int, members []int, passed []Socket) (Seen, error) {
	s := Seen{Held: map[uint64]bool{}, Polled: map[uint64]bool{}}
	ours := map[uint64]bool{}
	for _, p := range passed {
		ours[p.Inode] = true
	}
	s.Members = len(members)
	if len(members) == 0 {
		return s, nil
	}
	for _, pid := range members {
		if err := look(pid, &s); err != nil {
			return Seen{}, err
		}
		if pid != pgid && s.Forked == nil {
			s.Forked = forked(pid)
		}
	}
	listening := Listening()
	for ino := range s.Held {
		if addr, ok := listening[ino]; ok && !ours[ino] {
			s.Own = append(s.Own, addr)
		}
	}
	return s, nil
}

// look adds what pid holds and polls to s. A process that exited meanwhile
// holds nothing.
func look(pid int, s *Seen) error {
	dir := filepath.Join("/proc", strconv.Itoa(pid), "fd")
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("diagnose: %w", err)
	}
	for _, e := range entries {
		link, err := os.Readlink(filepath.Join(dir, e.Name()))
		if err != nil {
			continue
		}
		if rest, ok := strings.CutPrefix(link, "socket:["); ok {
			if ino, err := strconv.ParseUint(strings.TrimSuffix(rest, "]"), 10, 64); err == nil {
				s.Held[ino] = true
			}
			continue
		}
		if link != "anon_inode:[eventpoll]" {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "fdinfo", e.Name()))
		if err != nil {
			continue
		}
		for _, ino := range epollTargets(b) {
			s.Epoll = true
			s.Polled[ino] = true
		}
	}
	return nil
}

// epollTargets returns the inodes of the files registered in an epoll
// instance, from its /proc/PID/fdinfo: one line per file,
// "tfd: 3 events: 19 data: 3 pos:0 ino:5133 sdev:9", the inode in hex.
func epollTargets(fdinfo []byte) []uint64 {
	var out []uint64
	sc := bufio.NewScanner(bytes.NewReader(fdinfo))
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "tfd:") {
			continue
		}
		for f := range strings.FieldsSeq(line) {
			if v, ok := strings.CutPrefix(f, "ino:"); ok {
				if ino, err := strconv.ParseUint(v, 16, 64); err == nil {
					out = append(out, ino)
				}
			}
		}
	}
	return out
}

// forked returns pid as a Fork if it was started with LISTEN_FDS and a
// LISTEN_PID that is not its own.
func forked(pid int) *Fork {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "environ"))
	if err != nil {
		return nil
	}
	var fds, lpid string
	for kv := range bytes.SplitSeq(b, []byte{0}) {
		if v, ok := bytes.CutPrefix(kv, []byte("LISTEN_FDS=")); ok {
			fds = string(v)
		} else if v, ok := bytes.CutPrefix(kv, []byte("LISTEN_PID=")); ok {
			lpid = string(v)
		}
	}
	if fds == "" || fds == "0" {
		return nil
	}
	n, err := strconv.Atoi(lpid)
	if err == nil && n == pid {
		return nil
	}
	return &Fork{PID: pid, ListenPID: n, Comm: comm(pid), ListenComm: comm(n)}
}

func comm(pid int) string {
	if pid <= 0 {
		return ""
	}
	b, _ := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "comm"))
	return strings.TrimSpace(string(b))
}

// GroupMembers lists the processes whose process group is pgid.
func GroupMembers(pgid int) []int { return Groups()[pgid] }

// Groups maps every process group to its processes, in one pass over
// /proc. Finding one group's members costs that pass too (a process's
// group is in its stat only), so a caller with many groups to look at
// should take them all from one Groups.
func Groups() map[int][]int {
	out := map[int][]int{}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return out
	}
	buf := make([]byte, 512)
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if pg, ok := procGroup(e.Name(), buf); ok {
			out[pg] = append(out[pg], pid)
		}
	}
	return out
}

// procGroup reads the process group of /proc/PID from its stat, through
// buf: "pid (comm) state ppid pgrp ...", where comm may hold spaces and
// ')'.
func procGroup(pid string, buf []byte) (int, bool) {
	// Plain syscalls: os.Open would also try the poller and fstat, three
	// more syscalls for each of hundreds of processes.
	fd, err := syscall.Open("/proc/"+pid+"/stat", syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
	if err != nil {
		return 0, false
	}
	n, err := syscall.Read(fd, buf)
	syscall.Close(fd)
	if err != nil || n <= 0 {
		return 0, false
	}
	st := string(buf[:n])
	i := strings.LastIndexByte(st, ')')
	if i < 0 {
		return 0, false
	}
	fs := strings.Fields(st[i+1:])
	if len(fs) < 3 {
		return 0, false
	}
	pg, err := strconv.Atoi(fs[2])
	return pg, err == nil
}
