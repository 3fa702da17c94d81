package main

// The trap modes: the mistakes a new app makes with socket activation, for
// agentd's readiness diagnostics (internal/e2e/diagnose_test.go).
//
//	own-port           keep the inherited fds open but serve a port of its
//	                   own (127.0.0.1:0, as an app with a hard-coded port
//	                   would), never the fds; no READY=1
//	strict-listen-pid  as sd_listen_fds(3): when LISTEN_PID is not this
//	                   process, ignore the fds (kept open) and fall back to
//	                   a port of its own, as own-port; run it from a
//	                   command that forks ("web: testapp; echo exited")

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
)

func init() {
	for _, m := range []string{"own-port", "strict-listen-pid"} {
		knownModes[m] = true
	}
}

// refusesFDs reports whether the process ignores its inherited fds, as an
// app that checks LISTEN_PID does when it is not the process named.
func refusesFDs(modes map[string]bool) bool {
	return modes["strict-listen-pid"] && os.Getenv("LISTEN_FDS") != "" &&
		os.Getenv("LISTEN_PID") != strconv.Itoa(os.Getpid())
}

// serveOwnPort serves GET / on a port of its own until ctx ends, leaving
// the inherited fds open and unserved.
func serveOwnPort(ctx context.Context, why string) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, "testapp:", err)
		return 1
	}
	fmt.Printf("testapp: %s: listening on %s myself\n", why, l.Addr())
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "own port")
	})}
	go func() {
		<-ctx.Done()
		srv.Close()
	}()
	srv.Serve(l)
	return 0
}
