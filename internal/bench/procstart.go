package main

import (
	"os/exec"
	"time"

	"github.com/agentd/agentd/sockets"
)

// startCost is how long one way of starting a process takes, from fork to
// its exit, measured on the otherwise idle machine: the floor under any
// switch that starts processes, and what agentd's exec shim adds to it.
type startCost struct {
	What    string `json:"what"`
	Seconds Stat   `json:"seconds"`
}

// processStartCosts runs each command n times.
func processStartCosts(bins binaries, n int) []startCost {
	return timeStarts(n, []startCase{
		{"/bin/true", []string{"/bin/true"}},
		{"a minimal Go program (tinyapp, exits at once)", []string{bins.TinyApp}},
		{"bash -c /bin/true (how agentd ran a Procfile line before it exec'd plain ones directly)", []string{"/bin/bash", "-c", "/bin/true"}},
		{"agentd's exec shim → /bin/true", sockets.ShimArgv(bins.Agentd, []string{"/bin/true"})},
		{"agentd's exec shim → bash -c /bin/true (agentd's whole chain before)", sockets.ShimArgv(bins.Agentd, []string{"/bin/bash", "-c", "/bin/true"})},
		{"agentd-shim (freestanding C) → /bin/true (agentd's whole chain now)", sockets.ShimArgv(bins.Shim, sockets.ShellArgv("/bin/true"))},
	})
}

// startChainCosts is the chain from fork to the app's first instruction,
// each way agentd can start "/bin/true" from a Procfile, against a direct
// fork+exec of it, interleaved so that the machine's load hits all alike.
func startChainCosts(bins binaries, n int) []startCost {
	return timeStarts(n, []startCase{
		{"fork+exec /bin/true (direct)", []string{"/bin/true"}},
		{"before: agentd re-executed as the shim → bash -c → /bin/true", sockets.ShimArgv(bins.Agentd, []string{"/bin/bash", "-c", "/bin/true"})},
		{"agentd re-executed as the shim → /bin/true (direct argv)", sockets.ShimArgv(bins.Agentd, sockets.ShellArgv("/bin/true"))},
		{"after: agentd-shim (freestanding C, no libc) → /bin/true (direct argv)", sockets.ShimArgv(bins.Shim, sockets.ShellArgv("/bin/true"))},
	})
}

type startCase struct {
	what string
	argv []string
}

// timeStarts runs every case n times, round-robin.
func timeStarts(n int, cases []startCase) []startCost {
	xs := make([][]float64, len(cases))
	for range n {
		for i, c := range cases {
			cmd := exec.Command(c.argv[0], c.argv[1:]...)
			t := time.Now()
			cmd.Run() // tinyapp exits 2 (no socket): its start is what counts
			xs[i] = append(xs[i], time.Since(t).Seconds())
		}
	}
	out := make([]startCost, len(cases))
	for i, c := range cases {
		out[i] = startCost{What: c.what, Seconds: stat(xs[i])}
	}
	return out
}
