// Command testvm proves agentd on a real machine: a Debian bookworm guest
// booted with systemd as PID 1 under qemu (TCG), driven over ssh from the
// host, with the load sent from the host through qemu's port forward.
//
//	go run ./testvm            # every scenario (make testvm)
//	go run ./testvm -break     # scenario 2 with an agentd that skips the
//	                           # readiness wait: must see failed requests
//	                           # (make testvm-break)
//	go run ./testvm -keep      # leave the VM running at the end (or at the
//	                           # first failure) and print how to ssh in
//
// What it needs (qemu, debootstrap, ssh, promtool, ...) it installs with
// apt-get. The guest's root file system is built once with debootstrap and
// cached in /var/tmp/agentd-testvm (-cache); every run writes a fresh raw
// ext4 image from it (mkfs.ext4 -d, no loop mount) and boots it with
// snapshot=on. See docs/testvm.md.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// cleanups run in reverse order at exit, also on failure and on SIGINT or
// SIGTERM: they stop what this program started (by PID) and remove its
// temporary files.
var (
	cleanupMu sync.Mutex
	cleanups  []func()
	cleanOnce sync.Once
)

func atExit(f func()) {
	cleanupMu.Lock()
	defer cleanupMu.Unlock()
	cleanups = append(cleanups, f)
}

func runCleanups() {
	cleanOnce.Do(func() {
		cleanupMu.Lock()
		fs := cleanups
		cleanups = nil
		cleanupMu.Unlock()
		for i := len(fs) - 1; i >= 0; i-- {
			fs[i]()
		}
	})
}

type options struct {
	cache   string
	breakIt bool
	keep    bool
	rate    float64
	bootMax time.Duration
	repo    string
	only    map[string]bool
}

func main() {
	var o options
	flag.StringVar(&o.cache, "cache", envOr("TESTVM_CACHE", "/var/tmp/agentd-testvm"), "where the guest's root file system is cached (env TESTVM_CACHE)")
	flag.BoolVar(&o.breakIt, "break", false, "the deliberate break: run scenario 2 with an agentd built to skip the readiness wait, and pass only if requests fail")
	flag.BoolVar(&o.keep, "keep", false, "leave the VM running at the end (Ctrl-C stops it) and print how to ssh in")
	flag.Float64Var(&o.rate, "rate", 25, "requests per second per client kind (three kinds) during the load scenarios")
	flag.DurationVar(&o.bootMax, "boot-timeout", 180*time.Second, "how long a boot of the guest may take")
	only := flag.String("only", "", "run only these scenarios, comma-separated (1,2,3,6,4a,5,4b); scenario 1 always runs")
	flag.Parse()
	if *only != "" {
		o.only = map[string]bool{"1": true}
		for _, id := range strings.Split(*only, ",") {
			o.only[strings.TrimSpace(id)] = true
		}
	}
	wd, err := os.Getwd()
	if err != nil {
		fatal(err)
	}
	o.repo = wd
	if _, err := os.Stat(filepath.Join(wd, "go.mod")); err != nil {
		fatal(fmt.Errorf("run from the repository's root (make testvm): %w", err))
	}
	if os.Geteuid() != 0 {
		fatal(fmt.Errorf("needs root: debootstrap, apt-get and mkfs.ext4 -d of a root file system"))
	}

	ctx, cancel := context.WithCancel(context.Background())
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		s := <-sig
		fmt.Fprintf(os.Stderr, "\ntestvm: %v: stopping the VM and cleaning up\n", s)
		cancel()
		runCleanups()
		os.Exit(130)
	}()

	code := run(ctx, &o)
	runCleanups()
	os.Exit(code)
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

func fatal(err error) {
	fmt.Fprintln(os.Stderr, "testvm:", err)
	runCleanups()
	os.Exit(1)
}

// timings records how long each part took, for the summary.
type timings struct {
	parts []struct {
		name string
		d    time.Duration
	}
}

func (t *timings) add(name string, start time.Time) time.Duration {
	d := time.Since(start)
	t.parts = append(t.parts, struct {
		name string
		d    time.Duration
	}{name, d})
	return d
}

func (t *timings) print() {
	fmt.Println("== timings")
	for _, p := range t.parts {
		fmt.Printf("   %-34s %7.1fs\n", p.name, p.d.Seconds())
	}
}

// run does the whole test and returns the exit status.
func run(ctx context.Context, o *options) int {
	total := time.Now()
	var tm timings
	defer func() {
		tm.add("total", total)
		tm.print()
	}()

	tmp, err := os.MkdirTemp("", "agentd-testvm-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "testvm:", err)
		return 1
	}
	atExit(func() { os.RemoveAll(tmp) })

	step := func(name string, f func() error) error {
		start := time.Now()
		fmt.Printf("== %s\n", name)
		err := f()
		d := tm.add(name, start)
		if err != nil {
			fmt.Printf("FAIL %s after %.1fs: %v\n", name, d.Seconds(), err)
		} else {
			fmt.Printf("   %s: %.1fs\n", name, d.Seconds())
		}
		return err
	}

	if err := step("host tools (apt-get when missing)", ensureHostTools); err != nil {
		return 1
	}
	var art *artifacts
	if err := step("build: make package (two versions), goapp", func() error {
		var err error
		art, err = buildArtifacts(ctx, o, tmp)
		return err
	}); err != nil {
		return 1
	}
	var rootfs string
	if err := step("guest rootfs (debootstrap, cached)", func() error {
		var err error
		rootfs, err = guestRootfs(ctx, o.cache)
		return err
	}); err != nil {
		return 1
	}
	var img string
	if err := step("image (mkfs.ext4 -d)", func() error {
		var err error
		img, err = makeImage(ctx, rootfs, tmp)
		return err
	}); err != nil {
		return 1
	}
	vm := &VM{dir: tmp, rootfs: rootfs, image: img, bootMax: o.bootMax}
	if err := step("boot (qemu TCG, systemd as PID 1)", func() error { return vm.Start(ctx) }); err != nil {
		vm.dumpConsole(os.Stdout)
		return 1
	}

	s := &suite{ctx: ctx, o: o, vm: vm, art: art, tm: &tm}
	ok := s.runAll()
	if !ok {
		fmt.Println("== FAILED: the guest's journal follows")
		s.dumpJournal()
	}
	if o.keep {
		vm.keepOpen(ctx)
	}
	if !ok {
		return 1
	}
	return 0
}
