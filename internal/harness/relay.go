package harness

import (
	"context"
	"io"
	"net"
	"path/filepath"
)

// RelaySocket listens on a unix socket in dir and copies bytes between
// each of its clients and sock, as ssh's forwarding of a unix socket does:
// descriptors sent with SCM_RIGHTS do not pass. stop closes it and every
// connection it relays.
func RelaySocket(dir, sock string) (path string, stop func(), err error) {
	path = filepath.Join(dir, "relay.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		return "", nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go relay(ctx, c, sock)
		}
	}()
	return path, func() { cancel(); ln.Close() }, nil
}

func relay(ctx context.Context, c net.Conn, sock string) {
	defer c.Close()
	var d net.Dialer
	up, err := d.DialContext(ctx, "unix", sock)
	if err != nil {
		return
	}
	defer up.Close()
	context.AfterFunc(ctx, func() { c.Close(); up.Close() })
	go func() { io.Copy(up, c); up.(*net.UnixConn).CloseWrite() }()
	io.Copy(c, up)
}
