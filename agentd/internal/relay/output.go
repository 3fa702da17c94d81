package relay

import "github.com/agentd/agentd/agentd/api"

// outQueue is the command's output from the oldest byte the client may
// still lack. A frame written to agentd's connection is not yet the
// client's: an agentd killed or upgraded between reading it and passing it
// on loses it. So output is kept until the client acknowledges it
// (api.FrameOutputAck) and sent again, from its offset, on the next
// attach; the client skips what it already had. A client that never
// acknowledges (an hctl from before FrameOutputAck) is never sent anything
// twice: what it was sent is dropped when its connection ends.
//
// It holds at most maxBuffered bytes (past that the oldest is dropped: it
// is in the log file). Only the relay's loop uses it.
type outQueue struct {
	frames []api.Frame // FrameStdout and FrameStderr, in order
	off    int64       // the offset of frames[0]'s first byte
	size   int         // bytes in frames
	sent   int         // how many of frames the current client was sent
	// dropped counts the bytes dropped before any client was sent them:
	// told to a client that does not acknowledge (api.FrameNotice).
	dropped int
}

// push queues an output frame.
func (q *outQueue) push(f api.Frame) {
	q.frames = append(q.frames, f)
	q.size += len(f.Data)
	for q.size > maxBuffered && len(q.frames) > 1 {
		if q.sent > 0 {
			q.sent--
		} else {
			q.dropped += len(q.frames[0].Data)
		}
		q.drop()
	}
}

func (q *outQueue) drop() {
	n := len(q.frames[0].Data)
	q.frames[0] = api.Frame{}
	q.frames = q.frames[1:]
	q.size -= n
	q.off += int64(n)
}

// next is the next frame the current client was not sent.
func (q *outQueue) next() (api.Frame, bool) {
	if q.sent == len(q.frames) {
		return api.Frame{}, false
	}
	return q.frames[q.sent], true
}

// wrote records that next was written to the current client.
func (q *outQueue) wrote() { q.sent++ }

// ack drops what the client says it has: n bytes from the run's start.
// It may come on a connection already replaced: it is still true of the
// client (the same hctl re-attaches).
func (q *outQueue) ack(n int64) {
	for len(q.frames) > 0 && q.off+int64(len(q.frames[0].Data)) <= n {
		q.drop()
		if q.sent > 0 {
			q.sent--
		}
	}
}

// lost records the end of the current client's connection: what it was
// sent goes again to the next one if clients acknowledge output, and is
// dropped if they do not (it got no more than the connection delivered).
func (q *outQueue) lost(acks bool) {
	if !acks {
		for ; q.sent > 0; q.sent-- {
			q.drop()
		}
	}
	q.sent = 0
}
