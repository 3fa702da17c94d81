package main

import (
	"net"
	"os"
	"path/filepath"
	"testing"

	"github.com/cloudflare/tableflip"
)

// TestControlSocketFromSystemdOutlivesAgentd: the control socket's file
// belongs to agentd.socket under systemd. When agentd stops (systemctl stop
// or restart, no upgrade), the file must still be there, or hctl finds
// nothing to connect to ("connect: no such file or directory") although
// systemd still listens and would start the next agentd. tableflip unlinks
// the path of every unix *listener* it holds when stopped without an
// upgrade; the control socket must not be held as one.
func TestControlSocketFromSystemdOutlivesAgentd(t *testing.T) {
	path := filepath.Join(t.TempDir(), "agentd.sock")
	// What systemd does for agentd.socket: bind, listen, pass the fd.
	sysd, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	sysd.(*net.UnixListener).SetUnlinkOnClose(false)
	passed, err := sysd.(*net.UnixListener).File()
	if err != nil {
		t.Fatal(err)
	}
	defer sysd.Close()

	// Only one Upgrader per process: this is the test binary's.
	upg, err := tableflip.New(tableflip.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := controlListener(upg, passed, path, "")
	if err != nil {
		t.Fatal(err)
	}
	// It serves: a client connects through the path.
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()

	// agentd stops without an upgrade, as on `systemctl stop agentd`.
	ln.Close()
	upg.Stop()
	<-upg.Exit() // tableflip's clean-up has run
	if _, err := os.Lstat(path); err != nil {
		t.Fatalf("after agentd stopped, the control socket file of systemd is gone: %v", err)
	}
	// And systemd's socket still takes connections for the next agentd.
	c, err = net.Dial("unix", path)
	if err != nil {
		t.Fatalf("connect after agentd stopped: %v", err)
	}
	c.Close()
}
