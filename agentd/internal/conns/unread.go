package conns

import (
	"golang.org/x/sys/unix"
)

// Unread counts the TCP connections accepted from listeners on ports that
// the processes of the groups in pgids hold with bytes received and not
// read yet: connections a server accepted and has not got round to (an
// asyncio server under load holds many). A server that closes such
// connections at shutdown (uvicorn does) resets them, so kernel steering
// waits for none to be left before SIGTERM.
func Unread(ports []int, pgids []int) (int, error) {
	want := map[uint16]bool{}
	for _, p := range ports {
		if p > 0 && p < 1<<16 {
			want[uint16(p)] = true
		}
	}
	unread := map[uint64]bool{}
	for _, fam := range []uint8{unix.AF_INET, unix.AF_INET6} {
		err := dumpInet(fam, func(port uint16, ino, rqueue uint32) {
			if want[port] && ino != 0 && rqueue > 0 {
				unread[uint64(ino)] = true
			}
		})
		if err != nil {
			return 0, err
		}
	}
	if len(unread) == 0 {
		return 0, nil
	}
	n := 0
	for _, pids := range groupMembers(pgids) {
		for _, pid := range pids {
			socketInodes(pid, func(ino uint64) {
				if unread[ino] {
					n++
					delete(unread, ino) // a connection shared by two processes counts once
				}
			})
		}
	}
	return n, nil
}
