package relay

import (
	"sync"
)

// Input is queued, not written by the goroutine that reads the client's
// frames: a command that does not read its stdin must not stop the relay
// from seeing a hang-up or the connection's end. The queue is bounded by
// the client: hctl keeps at most api.InputWindow bytes unacknowledged
// (FrameInput, sent as input is written); a client that sends more than
// maxQueued is cut off.
const maxQueued = 4 << 20

type inputQueue struct {
	mu     sync.Mutex
	cond   *sync.Cond
	chunks [][]byte
	queued int
	eof    bool // the end of input is queued (after chunks)
	done   bool // the command ended: nothing more is written
}

func newInputQueue() *inputQueue {
	q := &inputQueue{}
	q.cond = sync.NewCond(&q.mu)
	return q
}

// push queues b; false when the queue is over its bound.
func (q *inputQueue) push(b []byte) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.queued+len(b) > maxQueued {
		return false
	}
	q.chunks = append(q.chunks, b)
	q.queued += len(b)
	q.cond.Signal()
	return true
}

func (q *inputQueue) close() {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.eof = true
	q.cond.Signal()
}

func (q *inputQueue) stop() {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.done = true
	q.cond.Signal()
}

// pop waits for the next chunk; eof when the input ended and every chunk
// was taken; ok false when the command ended.
func (q *inputQueue) pop() (b []byte, eof, ok bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for len(q.chunks) == 0 && !q.eof && !q.done {
		q.cond.Wait()
	}
	switch {
	case q.done:
		return nil, false, false
	case len(q.chunks) > 0:
		b = q.chunks[0]
		q.chunks = q.chunks[1:]
		q.queued -= len(b)
		return b, false, true
	}
	return nil, true, true
}

// writeInput writes queued input to the command until its end, then
// closes the pipe (a pty gets ^D). Each write is reported on written.
func (s *session) writeInput(written chan<- struct{}) {
	for {
		b, eof, ok := s.inq.pop()
		if !ok {
			return
		}
		if eof {
			if s.ptmx != nil {
				s.ptmx.Write([]byte{4}) // ^D: end of input on a terminal
			} else {
				s.in.Close()
			}
			return
		}
		s.in.Write(b) // an error: the command closed its stdin; the rest is dropped
		s.inWritten.Add(int64(len(b)))
		select {
		case written <- struct{}{}:
		default:
		}
	}
}
