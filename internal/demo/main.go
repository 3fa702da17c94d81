// Command demo is `make demo`: it builds agentd, hctl and the example Go
// app, starts agentd on a temporary state directory, creates an app on a
// free loopback port, deploys it, then deploys several new releases one
// after another while three kinds of HTTP clients keep sending requests,
// and prints what a user wants to know. It stops everything it started.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/agentd/agentd/agentd/api"
	"github.com/agentd/agentd/internal/harness"
	"github.com/agentd/agentd/internal/loadgen"
)

func main() {
	deploys := flag.Int("deploys", 5, "releases to deploy under load")
	keep := flag.Bool("keep", false, "leave agentd and the app running (prints how to reach them)")
	flag.Parse()
	if err := run(*deploys, *keep); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

func step(format string, args ...any) {
	fmt.Printf("==> "+format+"\n", args...)
}

func run(n int, keep bool) error {
	dir, err := os.MkdirTemp("", "agentd-demo-")
	if err != nil {
		return err
	}
	defer func() {
		if !keep {
			os.RemoveAll(dir)
		}
	}()

	step("building agentd, hctl and examples/goapp")
	bins, err := harness.Build(filepath.Join(dir, "bin"))
	if err != nil {
		return err
	}
	step("starting agentd (embedded mode, state in %s)", dir)
	ag, err := harness.Start(bins, dir)
	if err != nil {
		return err
	}
	stopped := false
	stop := func() {
		if !stopped && !keep {
			stopped = true
			step("stopping agentd and every app process it started")
			ag.Stop()
		}
	}
	defer stop()
	// Ctrl-C still cleans up.
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	go func() {
		<-sig
		stop()
		os.RemoveAll(dir)
		os.Exit(130)
	}()

	hctl := func(args ...string) (harness.Result, error) {
		fmt.Printf("    $ hctl %s\n", strings.Join(args, " "))
		r := ag.Hctl(args...)
		if r.Code != 0 {
			return r, fmt.Errorf("hctl %s failed:\n%s", strings.Join(args, " "), r)
		}
		return r, nil
	}

	step("creating app \"hello\" on a free loopback port")
	create := []string{"apps", "create", "hello", "--socket", "web=tcp://127.0.0.1:0", "--readiness", "web=notify"}
	if os.Geteuid() == 0 {
		// agentd runs as root too, and refuses an app without a user
		// unless it may run as root (docs/security.md).
		create = append(create, "--allow-root")
	}
	if _, err := hctl(create...); err != nil {
		return err
	}
	var info api.AppInfo
	if r := ag.HctlJSON(&info, "apps", "info", "hello"); r.Code != 0 {
		return fmt.Errorf("apps info: %s", r)
	}
	url := "http://" + info.Sockets[0].Bound + "/"
	fmt.Printf("    the app's socket: %s (held by agentd)\n", url)

	release := func(i int) (string, error) {
		rd := filepath.Join(dir, fmt.Sprintf("release-%d", i))
		if _, err := harness.Release(rd, "web: ./goapp\n", map[string]string{"VERSION": fmt.Sprintln(i)}); err != nil {
			return "", err
		}
		return rd, harness.CopyFile(bins.GoApp, filepath.Join(rd, "goapp"))
	}
	rd, err := release(0)
	if err != nil {
		return err
	}
	step("first deploy")
	r, err := hctl("deploy", "hello", rd, "-m", "first release")
	if err != nil {
		return err
	}
	fmt.Print(indent(r.Stdout))

	step("starting load: a new connection per POST, POSTs on kept-alive connections, GETs through Go's default client")
	var runs []*loadgen.Run
	for _, k := range loadgen.AllKinds {
		lr, err := loadgen.Start(context.Background(), loadgen.Config{URL: url, Kind: k, Workers: 2, Duration: 10 * time.Minute})
		if err != nil {
			return err
		}
		runs = append(runs, lr)
	}

	type sw struct {
		release        string
		switchS, drain float64
	}
	var switches []sw
	for i := 1; i <= n; i++ {
		rd, err := release(i)
		if err != nil {
			return err
		}
		var res api.OpResult
		rr := ag.HctlJSON(&res, "deploy", "hello", rd, "-m", fmt.Sprintf("release %d under load", i))
		if rr.Code != 0 {
			for _, lr := range runs {
				lr.Stop()
			}
			return fmt.Errorf("deploy %d failed:\n%s", i, rr)
		}
		switches = append(switches, sw{res.Release, res.SwitchSeconds, res.DrainSeconds})
		fmt.Printf("    deploy %d/%d: %s live, switch %.3fs, drain %.3fs\n", i, n, res.Release, res.SwitchSeconds, res.DrainSeconds)
	}
	var results []loadgen.Result
	for _, lr := range runs {
		results = append(results, lr.Stop())
	}

	step("what agentd is running now")
	if r, err := hctl("ps", "hello"); err == nil {
		fmt.Print(indent(r.Stdout))
	}
	if r, err := hctl("releases", "hello"); err == nil {
		fmt.Print(indent(r.Stdout))
	}

	var sent, failed int64
	for _, res := range results {
		sent += res.Sent
		failed += res.Failed
	}
	times := make([]float64, 0, len(switches))
	for _, s := range switches {
		times = append(times, s.switchS)
	}
	slices.Sort(times)
	fmt.Println()
	fmt.Println("================ agentd demo ================")
	fmt.Printf("deploys done:      %d under load (+1 before)\n", len(switches))
	fmt.Printf("requests sent:     %d\n", sent)
	fmt.Printf("requests failed:   %d\n", failed)
	for _, res := range results {
		fmt.Printf("  %-16s %8d sent %4d failed  p50 %-8s p99 %-8s max %s\n", res.Kind, res.Sent, res.Failed,
			res.Latency.P50.Round(10*time.Microsecond), res.Latency.P99.Round(10*time.Microsecond), res.Latency.Max.Round(10*time.Microsecond))
	}
	if len(times) > 0 {
		fmt.Printf("switch time:       min %.3fs  median %.3fs  max %.3fs  (new release started -> ready -> old sent SIGTERM)\n",
			times[0], times[len(times)/2], times[len(times)-1])
	}
	for _, s := range switches {
		fmt.Printf("  %-4s switch %.3fs  drain %.3fs\n", s.release, s.switchS, s.drain)
	}
	fmt.Println("=============================================")
	if keep {
		js, _ := json.Marshal(map[string]string{"HCTL_SOCKET": ag.Socket, "url": url})
		fmt.Printf("left running: %s (stop agentd with kill %d)\n", js, ag.PID())
	}
	if failed > 0 {
		for _, res := range results {
			if res.Failed > 0 {
				fmt.Printf("%s errors: %v\n", res.Kind, res.Errors)
			}
		}
		return fmt.Errorf("%d requests failed", failed)
	}
	return nil
}

func indent(s string) string {
	var b strings.Builder
	for l := range strings.SplitSeq(strings.TrimRight(s, "\n"), "\n") {
		b.WriteString("    " + l + "\n")
	}
	return b.String()
}
