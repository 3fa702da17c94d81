package relay

import (
	"bytes"
	"testing"

	"github.com/agentd/agentd/agentd/api"
)

func out(s string) api.Frame { return api.Frame{Type: api.FrameStdout, Data: []byte(s)} }

// sendAll is the loop's flush: every frame not yet sent, in order.
func sendAll(q *outQueue) string {
	var b bytes.Buffer
	for f, ok := q.next(); ok; f, ok = q.next() {
		b.Write(f.Data)
		q.wrote()
	}
	return b.String()
}

func TestOutQueueAckAndLoss(t *testing.T) {
	var q outQueue
	q.push(out("ab"))
	q.push(out("cd"))
	if got := sendAll(&q); got != "abcd" {
		t.Fatalf("sent %q", got)
	}
	q.ack(3) // "ab" whole; "cd" is kept: the client skips its first byte
	q.lost(true)
	if q.off != 2 {
		t.Fatalf("after an ack of 3 and a lost connection: offset %d, want 2", q.off)
	}
	if got := sendAll(&q); got != "cd" {
		t.Fatalf("resent %q, want \"cd\"", got)
	}
	q.push(out("ef"))
	if got := sendAll(&q); got != "ef" {
		t.Fatalf("sent %q", got)
	}
	// A client that does not acknowledge: what it was sent is gone with it.
	q.lost(false)
	if q.off != 6 || len(q.frames) != 0 {
		t.Fatalf("after a non-acknowledging client: offset %d, %d frames; want 6, none", q.off, len(q.frames))
	}
}

func TestOutQueueBound(t *testing.T) {
	var q outQueue
	chunk := string(make([]byte, 256<<10))
	q.push(out(chunk))
	sendAll(&q) // sent, not acknowledged
	for range 4 {
		q.push(out(chunk))
	}
	if q.size > maxBuffered {
		t.Fatalf("kept %d bytes, bound %d", q.size, maxBuffered)
	}
	// The sent frame went first; it is not counted as never sent.
	if q.dropped != 0 || q.off != 256<<10 || q.sent != 0 {
		t.Fatalf("dropped %d, offset %d, sent %d; want 0, %d, 0", q.dropped, q.off, q.sent, 256<<10)
	}
	q.push(out(chunk))
	if q.dropped != 256<<10 {
		t.Fatalf("dropped %d unsent bytes, want %d", q.dropped, 256<<10)
	}
}
