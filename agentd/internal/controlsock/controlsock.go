// Package controlsock provides agentd's control socket, the unix socket
// hctl talks to, from whichever source has it: the agentd this one
// replaces (an upgrade), systemd (agentd.socket), or a fresh bind. It is
// registered for the next upgrade in a way that never deletes the socket's
// file behind systemd's back.
package controlsock

import (
	"fmt"
	"net"
	"os"

	"github.com/agentd/agentd/agentd/internal/server"
)

// Key names the control socket among the files passed to a new agentd on
// upgrade.
const Key = "control"

// Files is where sockets pass between agentds on upgrade (tableflip's Fds).
type Files interface {
	File(key string) (*os.File, error)
	AddFile(key string, f *os.File) error
}

// Listen returns the control socket: the one a parent agentd handed over
// in files, else fromSystemd (agentd.socket's, may be nil), else one bound
// at path for group (server.Listen). It takes ownership of fromSystemd.
//
// The socket is registered in files as a plain file, not as a unix
// listener: on a stop without upgrade tableflip unlinks the path of every
// unix listener it holds, which would delete agentd.socket's file under
// systemd (hctl then finds no socket until agentd.socket restarts), and,
// because tableflip does it from a goroutine racing the exit, only
// sometimes. agentd removes the file itself where it is agentd's to remove
// (when it bound it, and is not handing over).
func Listen(files Files, fromSystemd *os.File, path, group string) (net.Listener, error) {
	inherited, err := files.File(Key)
	if err != nil {
		return nil, fmt.Errorf("control socket from the previous agentd: %w", err)
	}
	if inherited != nil {
		if fromSystemd != nil {
			fromSystemd.Close()
		}
		ln, err := net.FileListener(inherited)
		inherited.Close()
		if err != nil {
			return nil, fmt.Errorf("control socket from the previous agentd: %w", err)
		}
		return ln, nil
	}
	var ln net.Listener
	if fromSystemd != nil {
		ln, err = net.FileListener(fromSystemd)
		fromSystemd.Close()
		if err != nil {
			return nil, fmt.Errorf("control socket from systemd: %w", err)
		}
	} else if ln, err = server.Listen(path, group); err != nil {
		return nil, err
	}
	ul, ok := ln.(*net.UnixListener)
	if !ok {
		ln.Close()
		return nil, fmt.Errorf("control socket %s: not a unix stream socket", path)
	}
	// Closing the listener must never remove the path: the next agentd
	// (after an upgrade) serves on it.
	ul.SetUnlinkOnClose(false)
	f, err := ul.File()
	if err != nil {
		ln.Close()
		return nil, fmt.Errorf("control socket: %w", err)
	}
	defer f.Close()
	if err := files.AddFile(Key, f); err != nil {
		ln.Close()
		return nil, fmt.Errorf("control socket: %w", err)
	}
	return ln, nil
}
