package agent

import (
	"io"
	"net"
	"testing"
	"time"

	"github.com/agentd/agentd/agentd/api"
)

// pumped runs Pump between two pipes and returns the test's ends: the
// client's and the relay's.
func pumped(t *testing.T) (client, relay net.Conn, done chan struct{}) {
	t.Helper()
	c1, c2 := net.Pipe()
	r1, r2 := net.Pipe()
	done = make(chan struct{})
	go func() { Pump(c2, r2); close(done) }()
	t.Cleanup(func() { c1.Close(); r1.Close(); <-done })
	return c1, r1, done
}

// relayFrames reads what Pump passed to the relay until it closes.
func relayFrames(t *testing.T, relay net.Conn) []byte {
	t.Helper()
	relay.SetReadDeadline(time.Now().Add(10 * time.Second))
	var types []byte
	fr := api.NewFrameReader(relay)
	for {
		f, err := fr.Read()
		if err != nil {
			if err != io.EOF && err != io.ErrClosedPipe {
				t.Fatalf("reading the relay's side: %v", err)
			}
			return types
		}
		types = append(types, f.Type)
	}
}

// TestPumpHangsUpForAGoneClient: a client that goes away without
// acknowledging the exit gets its process hung up; a hang-up it sends
// itself is not passed on (only agentd says that); one that acknowledged
// does not.
func TestPumpHangsUpForAGoneClient(t *testing.T) {
	client, relay, _ := pumped(t)
	w := api.NewFrameWriter(client)
	go func() {
		w.Write(api.FrameStdin, []byte("x"))
		w.Write(api.FrameHangup, nil)
		w.Write(api.FrameSignal, []byte{2})
		client.Close()
	}()
	if got := string(relayFrames(t, relay)); got != "ish" {
		t.Errorf("frames to the relay %q, want %q (stdin, signal, agentd's hang-up)", got, "ish")
	}

	client, relay, _ = pumped(t)
	w = api.NewFrameWriter(client)
	go func() {
		w.Write(api.FrameAck, nil)
		client.Close()
	}()
	if got := string(relayFrames(t, relay)); got != "a" {
		t.Errorf("after an ack, frames to the relay %q, want only the ack", got)
	}
}

// TestPumpRelayEnds: the relay's output reaches the client unchanged, and
// when the relay ends first the client's connection closes and nothing is
// hung up.
func TestPumpRelayEnds(t *testing.T) {
	client, relay, done := pumped(t)
	rw := api.NewFrameWriter(relay)
	go func() {
		rw.Write(api.FrameStdout, []byte("hi"))
		rw.Write(api.FrameExit, []byte(`{"code":0}`))
		relay.Close()
	}()
	client.SetReadDeadline(time.Now().Add(10 * time.Second))
	fr := api.NewFrameReader(client)
	for _, want := range []byte{api.FrameStdout, api.FrameExit} {
		f, err := fr.Read()
		if err != nil || f.Type != want {
			t.Fatalf("client read %c %v, want %c", f.Type, err, want)
		}
	}
	if _, err := fr.Read(); err == nil {
		t.Fatal("the client's connection stayed open after the relay ended")
	}
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Pump did not return after the relay ended")
	}
}
