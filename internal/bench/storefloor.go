package main

import (
	"crypto/rand"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"time"
)

// What "new code live ≤ app boot + 30 ms" cannot go below on this machine,
// measured beside it: parts of every deploy that are the machine's, not
// agentd's. hctl is a program the user starts, so its own start is in
// every deploy; a release's new files must be on disk before it is
// recorded, so the write and fsync of them is too (cp -a + sync of the
// 8 MiB tree is that for the 8 MiB case).
type storeFloor struct {
	// HctlStart is `hctl --version`, fork to exit.
	HctlStart Stat `json:"hctl_start_seconds"`
	// Fsync1MiB is the write and fsync of a new 1 MiB file: what the
	// one-file change must wait for before its release is recorded.
	Fsync1MiB Stat `json:"write_fsync_1mib_seconds"`
}

func measureFloor(hctl, dir string, n int) (*storeFloor, error) {
	var starts, syncs []float64
	buf := make([]byte, 1<<20)
	for i := range n {
		t0 := time.Now()
		if out, err := exec.Command(hctl, "--version").CombinedOutput(); err != nil {
			return nil, fmt.Errorf("hctl --version: %v: %s", err, out)
		}
		starts = append(starts, time.Since(t0).Seconds())
		rand.Read(buf)
		p := filepath.Join(dir, fmt.Sprintf("floor-%d", i))
		t0 = time.Now()
		f, err := os.Create(p)
		if err != nil {
			return nil, err
		}
		_, err = f.Write(buf)
		if err == nil {
			err = f.Sync()
		}
		f.Close()
		syncs = append(syncs, time.Since(t0).Seconds())
		os.Remove(p)
		if err != nil {
			return nil, err
		}
	}
	return &storeFloor{HctlStart: stat(starts), Fsync1MiB: stat(syncs)}, nil
}
