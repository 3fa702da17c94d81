package steer

import (
	"os"
	"testing"
)

// BenchmarkRoute measures a Route that moves the routes to another socket
// and back: the checks of the sockets, a sockarray update, the routes word,
// and the old slot's removal with its count.
func BenchmarkRoute(b *testing.B) {
	if err := Supported(); err != nil {
		b.Skip(err)
	}
	x, err := Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer x.Close()
	info, err := inspect(x)
	if err != nil {
		b.Fatal(err)
	}
	y, err := Listen("tcp4", info.addr.String())
	if err != nil {
		b.Fatal(err)
	}
	defer y.Close()
	g, err := New("bench")
	if err != nil {
		b.Fatal(err)
	}
	defer g.Close()
	socks := []*os.File{x, y}
	for i := 0; b.Loop(); i++ {
		if err := g.Route(socks[i%2], nil, 0); err != nil {
			b.Fatal(err)
		}
	}
}
