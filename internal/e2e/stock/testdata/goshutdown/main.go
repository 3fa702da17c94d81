// Command goshutdown is a stock Go HTTP server as a new user writes one:
// it serves the socket agentd passes as fd 3 and, on SIGTERM, calls
// http.Server.Shutdown, as net/http's own ExampleServer_Shutdown does. No
// grace period and no Connection: close: exactly what docs/app-contract.md's
// recipe adds, and what kernel steering must make unnecessary.
// stock_test.go deploys it under new-connection POST load.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	l, err := net.FileListener(os.NewFile(3, "web"))
	if err != nil {
		log.Fatalf("fd 3: %v", err)
	}
	body := fmt.Sprintf("ok %s %d\n", os.Getenv("AGENTD_RELEASE"), os.Getpid())
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, err := io.Copy(io.Discard, r.Body); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		io.WriteString(w, body)
	})}

	idleConnsClosed := make(chan struct{})
	go func() {
		sigterm := make(chan os.Signal, 1)
		signal.Notify(sigterm, syscall.SIGTERM)
		<-sigterm
		if err := srv.Shutdown(context.Background()); err != nil {
			log.Printf("shutdown: %v", err)
		}
		close(idleConnsClosed)
	}()
	if err := srv.Serve(l); !errors.Is(err, http.ErrServerClosed) {
		log.Fatalf("serve: %v", err)
	}
	<-idleConnsClosed
}
