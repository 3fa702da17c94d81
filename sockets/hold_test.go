package sockets

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestHeldShimNeedsTheGoAhead: a shim held on a pipe execs the app only
// when it reads agentd's byte. A holder that closes the pipe without it
// (agentd died before recording the process) gets exit status
// ExitNotReleased and the app never ran: it would have created a file.
func TestHeldShimNeedsTheGoAhead(t *testing.T) {
	for _, sh := range testShims(t) {
		t.Run(sh.Name, func(t *testing.T) { testHeldShimNeedsTheGoAhead(t, sh.Path) })
	}
}

func testHeldShimNeedsTheGoAhead(t *testing.T, exe string) {
	for _, goAhead := range []bool{false, true} {
		name := "closed without the byte"
		if goAhead {
			name = "released"
		}
		t.Run(name, func(t *testing.T) {
			marker := filepath.Join(t.TempDir(), "the-app-ran")
			r, w, err := os.Pipe()
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { r.Close(); w.Close() })
			argv := ShimArgvOpts(exe, ShimOptions{HoldFD: 3}, []string{"/bin/sh", "-c", `touch "$0"`, marker})
			cmd := exec.Command(argv[0], argv[1:]...)
			cmd.ExtraFiles = []*os.File{r}
			var stderr strings.Builder
			cmd.Stderr = &stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { cmd.Process.Kill() })
			r.Close()
			if goAhead {
				if _, err := w.Write([]byte{1}); err != nil {
					t.Fatal(err)
				}
			}
			w.Close()
			err = cmd.Wait()
			_, statErr := os.Stat(marker)
			if goAhead {
				if err != nil || statErr != nil {
					t.Fatalf("released shim: %v, marker %v, stderr %q; want the app run", err, statErr, stderr.String())
				}
				return
			}
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != ExitNotReleased {
				t.Fatalf("shim without the go-ahead: %v, want exit status %d", err, ExitNotReleased)
			}
			if !errors.Is(statErr, os.ErrNotExist) {
				t.Fatalf("the app ran without the go-ahead (marker: %v)", statErr)
			}
			if !strings.Contains(stderr.String(), "without its go-ahead") {
				t.Errorf("stderr %q, want it to say why", stderr.String())
			}
		})
	}
}
