// Command tinyapp is the app of `make bench`'s scale scenario (100 apps of 4
// processes each): as little as an app can be and still speak agentd's
// contract, so that 400 of them fit on a small machine and what is measured
// is agentd. It serves a fixed HTTP answer on its inherited socket (fd 3),
// one request per connection, sends READY=1 to $NOTIFY_SOCKET once
// listening, and on SIGTERM stops accepting, finishes the connections it
// has and exits.
package main

import (
	"bufio"
	"net"
	"os"
	"os/signal"
	"sync"
	"syscall"
)

const answer = "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n"

func main() {
	if os.Getenv("LISTEN_FDS") != "1" {
		os.Stderr.WriteString("tinyapp: want exactly one inherited socket (LISTEN_FDS=1)\n")
		os.Exit(2)
	}
	l, err := net.FileListener(os.NewFile(3, "web"))
	if err != nil {
		os.Stderr.WriteString("tinyapp: " + err.Error() + "\n")
		os.Exit(1)
	}
	if ns := os.Getenv("NOTIFY_SOCKET"); ns != "" {
		if c, err := net.Dial("unixgram", ns); err == nil {
			c.Write([]byte("READY=1"))
			c.Close()
		}
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	var wg sync.WaitGroup
	go func() {
		<-sig
		l.Close()
	}()
	for {
		c, err := l.Accept()
		if err != nil {
			break
		}
		wg.Go(func() {
			defer c.Close()
			r := bufio.NewReader(c)
			for {
				line, err := r.ReadSlice('\n')
				if err != nil {
					return
				}
				if len(line) <= 2 { // the blank line ending the header
					break
				}
			}
			c.Write([]byte(answer))
		})
	}
	wg.Wait()
}
