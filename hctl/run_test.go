package main

import (
	"bytes"
	"io"
	"net"
	"sync"
	"testing"

	"github.com/agentd/agentd/agentd/api"
)

// stream is a RunStream on one end of a pipe; the other end is returned.
func stream(t *testing.T) (*api.RunStream, net.Conn) {
	a, b := net.Pipe()
	t.Cleanup(func() { a.Close(); b.Close() })
	return &api.RunStream{R: api.NewFrameReader(a), W: api.NewFrameWriter(a)}, b
}

// TestRunStreamResends: on a re-attach, hctl sends again the input the
// relay says it has not received (FrameInput), and the end of input if the
// relay has not seen it.
func TestRunStreamResends(t *testing.T) {
	done := make(chan struct{})
	defer close(done)
	first, firstPeer := stream(t)
	go io.Copy(io.Discard, firstPeer) // the old connection swallows what it gets
	rs := &runStream{cur: first, next: make(chan struct{}), stderr: io.Discard}
	rs.room = sync.NewCond(&rs.mu)
	rs.send(api.FrameStdin, []byte("abc"), done)
	rs.received(api.InputData(1, false)) // the relay had "a"
	rs.send(api.FrameStdin, []byte("def"), done)
	rs.send(api.FrameEOF, nil, done)

	second, peer := stream(t)
	got := make(chan []api.Frame, 1)
	go func() {
		w := api.NewFrameWriter(peer)
		w.Write(api.FrameInput, api.InputData(2, false)) // it has "ab"
		r := api.NewFrameReader(peer)
		var fs []api.Frame
		for len(fs) < 2 {
			f, err := r.Read()
			if err != nil {
				break
			}
			fs = append(fs, f)
		}
		got <- fs
	}()
	if err := rs.set(second); err != nil {
		t.Fatal(err)
	}
	fs := <-got
	if len(fs) != 2 || fs[0].Type != api.FrameStdin || !bytes.Equal(fs[0].Data, []byte("cdef")) || fs[1].Type != api.FrameEOF {
		t.Fatalf("resent %+v, want stdin \"cdef\" then EOF", fs)
	}
}

// TestOutputCursor: after a re-attach, the output the relay sends again is
// written once; a gap the relay did not keep is counted.
func TestOutputCursor(t *testing.T) {
	var o outputCursor
	if got := string(o.take([]byte("hello "))); got != "hello " {
		t.Fatalf("take = %q", got)
	}
	if lost := o.from(api.OffsetData(4)); lost != 0 {
		t.Fatalf("from(4) lost %d", lost)
	}
	if got := string(o.take([]byte("o "))) + string(o.take([]byte("world"))); got != "world" {
		t.Fatalf("after from(4): wrote %q, want \"world\"", got)
	}
	if lost := o.from(api.OffsetData(20)); lost != 9 || o.got != 20 {
		t.Fatalf("from(20) at 11: lost %d, at %d; want 9, 20", lost, o.got)
	}
	if got := string(o.take([]byte("!"))); got != "!" || o.got != 21 {
		t.Fatalf("take after a gap = %q at %d", got, o.got)
	}
}
