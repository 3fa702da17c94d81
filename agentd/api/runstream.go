package api

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"
)

// The stream of a one-off process (`hctl run`): frames both ways over the
// control connection once agentd has switched it to the run protocol (HTTP
// Upgrade: agentd-run), and over the connection between agentd and the
// run's relay process. agentd passes frames through unchanged, except that
// it adds FrameHangup when its client went away without having received
// the exit (docs/hctl.md, "hctl run").
//
// A frame is one type byte, a 4-byte big-endian payload length, then the
// payload.
const (
	// Up: from the client to the process.
	FrameStdin  = 'i' // bytes for the process's stdin (or its pty)
	FrameEOF    = 'e' // the client's stdin ended
	FrameResize = 'w' // the terminal's size: rows, cols as uint16 each
	FrameSignal = 's' // a signal for the process group: one byte, its number
	FrameAck    = 'a' // the client has the exit status: the relay may end
	// FrameOutputAck: how many bytes of output (the data of FrameStdout
	// and FrameStderr, counted together from the run's start) the client
	// has, as OffsetData. A client sends it first on every (re-)attach and
	// then as output arrives; the relay keeps what it sent until then, so
	// that output a connection lost (an agentd killed between reading it
	// and passing it on) is sent again. A client that never sends it gets
	// no output twice.
	FrameOutputAck = 'c'
	// FrameHangup is sent by agentd, never by a client: the client is gone
	// (its connection ended without FrameAck). The relay hangs the process
	// up at once rather than waiting out its re-attach grace window.
	FrameHangup = 'h'

	// Down: from the process to the client.
	FrameStdout = 'o' // output (everything, with a pty)
	FrameStderr = 'r' // standard error (pipes only)
	FrameExit   = 'x' // the exit: a RunExit as JSON; the last frame
	FrameNotice = 'n' // a line from the relay for the user (text)
	// FrameInput is the first frame on every (re-)attach: how many bytes
	// of input the relay has received (uint64) and whether the input has
	// ended (one byte, 1 or 0), so that a client resends what was lost
	// with the connection it had.
	FrameInput = 'k'
	// FrameOutputFrom follows FrameInput on every (re-)attach: the offset
	// (OffsetData) of the output that follows; a client skips what it
	// already has, and past the output it has, the gap was not kept.
	FrameOutputFrom = 'f'
)

// InputWindow is how much input a client sends ahead of the relay's
// FrameInput acknowledgements; the relay cuts off a client far beyond it.
const InputWindow = 1 << 20

// MaxFrame bounds a frame's payload: a larger one is a protocol error.
const MaxFrame = 1 << 20

// RunUpgrade is the Upgrade protocol of the control API's run endpoints.
const RunUpgrade = "agentd-run"

// RunRequest starts a one-off process: POST /v1/apps/{app}/runs.
type RunRequest struct {
	// Command is the argv to run (a lone string runs under a shell when it
	// has shell syntax, as a Procfile line does).
	Command []string `json:"command"`
	// Release is the release to run ("v3"); empty for the active one.
	Release string `json:"release,omitempty"`
	// Type, when set, passes the sockets of that process type (else none).
	Type string `json:"type,omitempty"`
	// Env are extra variables, KEY=VALUE, over the release's config.
	Env []string `json:"env,omitempty"`
	// TTY asks for a pseudo-terminal of Rows x Cols instead of pipes.
	TTY  bool `json:"tty,omitempty"`
	Rows int  `json:"rows,omitempty"`
	Cols int  `json:"cols,omitempty"`
}

// RunExit is how a one-off process ended (FrameExit).
type RunExit struct {
	// Code is the exit status, 128+N for a process killed by signal N.
	Code   int    `json:"code"`
	Signal string `json:"signal,omitempty"` // e.g. "SIGKILL"
	// HungUp: the relay hung it up because its client was gone.
	HungUp bool `json:"hung_up,omitempty"`
}

// RunInfo names a started run: the header X-Agentd-Run carries Process,
// X-Agentd-Release the release.
type RunInfo struct {
	App     string `json:"app"`
	Process string `json:"process"` // run.N
	Release string `json:"release"`
}

// Frame is one frame of the run stream.
type Frame struct {
	Type byte
	Data []byte
}

// ErrFrameTooLarge is a frame whose length exceeds MaxFrame.
var ErrFrameTooLarge = errors.New("run stream: frame too large")

// FrameWriter writes frames; it is safe for concurrent use (each frame is
// written whole).
type FrameWriter struct {
	mu sync.Mutex
	w  io.Writer
}

// NewFrameWriter returns a FrameWriter on w.
func NewFrameWriter(w io.Writer) *FrameWriter { return &FrameWriter{w: w} }

// Write writes one frame; a payload over MaxFrame is split.
func (fw *FrameWriter) Write(typ byte, data []byte) error {
	fw.mu.Lock()
	defer fw.mu.Unlock()
	for {
		n := min(len(data), MaxFrame)
		var hdr [5]byte
		hdr[0] = typ
		binary.BigEndian.PutUint32(hdr[1:], uint32(n))
		if _, err := fw.w.Write(append(hdr[:], data[:n]...)); err != nil {
			return err
		}
		data = data[n:]
		if len(data) == 0 {
			return nil
		}
	}
}

// FrameReader reads frames.
type FrameReader struct{ r *bufio.Reader }

// NewFrameReader returns a FrameReader on r.
func NewFrameReader(r io.Reader) *FrameReader {
	if br, ok := r.(*bufio.Reader); ok {
		return &FrameReader{r: br}
	}
	return &FrameReader{r: bufio.NewReader(r)}
}

// Read reads the next frame. io.EOF: the stream ended between frames;
// io.ErrUnexpectedEOF: within one.
func (fr *FrameReader) Read() (Frame, error) {
	var hdr [5]byte
	if _, err := io.ReadFull(fr.r, hdr[:1]); err != nil {
		return Frame{}, err
	}
	if _, err := io.ReadFull(fr.r, hdr[1:]); err != nil {
		return Frame{}, noEOF(err)
	}
	n := binary.BigEndian.Uint32(hdr[1:])
	if n > MaxFrame {
		return Frame{}, fmt.Errorf("%w: %d bytes", ErrFrameTooLarge, n)
	}
	data := make([]byte, n)
	if _, err := io.ReadFull(fr.r, data); err != nil {
		return Frame{}, noEOF(err)
	}
	return Frame{Type: hdr[0], Data: data}, nil
}

func noEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// InputData is the payload of FrameInput.
func InputData(n int64, eof bool) []byte {
	b := binary.BigEndian.AppendUint64(nil, uint64(n))
	if eof {
		return append(b, 1)
	}
	return append(b, 0)
}

// ParseInput reads the payload of FrameInput.
func ParseInput(b []byte) (n int64, eof bool, err error) {
	if len(b) != 9 {
		return 0, false, fmt.Errorf("run stream: input frame of %d bytes, want 9", len(b))
	}
	return int64(binary.BigEndian.Uint64(b)), b[8] == 1, nil
}

// OffsetData is the payload of FrameOutputAck and FrameOutputFrom.
func OffsetData(n int64) []byte { return binary.BigEndian.AppendUint64(nil, uint64(n)) }

// ParseOffset reads the payload of FrameOutputAck and FrameOutputFrom.
func ParseOffset(b []byte) (int64, error) {
	if len(b) != 8 {
		return 0, fmt.Errorf("run stream: offset frame of %d bytes, want 8", len(b))
	}
	return int64(binary.BigEndian.Uint64(b)), nil
}

// ResizeData is the payload of FrameResize.
func ResizeData(rows, cols int) []byte {
	var b [4]byte
	binary.BigEndian.PutUint16(b[0:], uint16(rows))
	binary.BigEndian.PutUint16(b[2:], uint16(cols))
	return b[:]
}

// ParseResize reads the payload of FrameResize.
func ParseResize(b []byte) (rows, cols int, err error) {
	if len(b) != 4 {
		return 0, 0, fmt.Errorf("run stream: resize frame of %d bytes, want 4", len(b))
	}
	return int(binary.BigEndian.Uint16(b[0:])), int(binary.BigEndian.Uint16(b[2:])), nil
}
