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
	cases := []struct {
		what string
		argv []string
	}{
		{"/bin/true", []string{"/bin/true"}},
		{"a minimal Go program (tinyapp, exits at once)", []string{bins.TinyApp}},
		{"bash -c /bin/true (how agentd runs a Procfile line)", []string{"/bin/bash", "-c", "/bin/true"}},
		{"agentd's exec shim → /bin/true", sockets.ShimArgv(bins.Agentd, []string{"/bin/true"})},
		{"agentd's exec shim → bash -c /bin/true (agentd's whole chain)", sockets.ShimArgv(bins.Agentd, sockets.ShellArgv("/bin/true"))},
	}
	var out []startCost
	for _, c := range cases {
		var xs []float64
		for range n {
			cmd := exec.Command(c.argv[0], c.argv[1:]...)
			t := time.Now()
			cmd.Run() // tinyapp exits 2 (no socket): its start is what counts
			xs = append(xs, time.Since(t).Seconds())
		}
		out = append(out, startCost{What: c.what, Seconds: stat(xs)})
	}
	return out
}
