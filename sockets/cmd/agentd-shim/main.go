// Command agentd-shim is agentd's exec shim on its own: the few lines
// between fork and the app's exec (LISTEN_PID, limits, no_new_privs, the
// seccomp guard, the hold until agentd has placed and recorded the
// process). agentd can re-execute itself for this, but a 16 MB binary
// with metrics, D-Bus and HTTP linked in spends 4-5 ms starting its
// runtime and package inits for nothing; this one imports only package
// sockets (see docs/benchmarks.md for the figures).
package main

import (
	"fmt"
	"os"

	"github.com/agentd/agentd/sockets"
)

func main() {
	if !sockets.IsShim(os.Args) {
		fmt.Fprintf(os.Stderr, "agentd-shim: run by agentd only (%s %s -- COMMAND...)\n", os.Args[0], sockets.ShimArg)
		os.Exit(2)
	}
	fmt.Fprintln(os.Stderr, "agentd-shim:", sockets.RunShim(os.Args))
	os.Exit(127)
}
