package sockets

import "os"

// Fd returns f's descriptor number without switching it to blocking mode.
//
// (*os.File).Fd does switch it, and for a socket that flag lives in the
// open file description that agentd and every app process share: an app
// then blocks in accept(2) inside a syscall, where closing its listener on
// SIGTERM no longer wakes it, and it never drains. Everything in agentd that
// needs the number of a socket fd goes through here.
func Fd(f *os.File) int {
	fd := -1
	if rc, err := f.SyscallConn(); err == nil {
		rc.Control(func(u uintptr) { fd = int(u) })
	}
	return fd
}
