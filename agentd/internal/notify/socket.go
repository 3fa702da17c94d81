package notify

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"

	"golang.org/x/sys/unix"
)

const (
	// queueLen is the capacity of C. It must exceed the number of distinct
	// important message kinds (7) so that overflow can always make room
	// without losing a kind; see push. It is allocated with each socket,
	// one per supervised process, and its consumer reads at once: 16, not
	// more (64 cost agentd 1.8 MiB with 400 processes).
	queueLen = 16
	// maxPathLen is sizeof(sun_path) minus the terminating NUL; for an
	// abstract name the leading NUL ("@") takes the place of the terminator.
	maxPathLen = 107
	// maxFDs is the kernel's SCM_MAX_FD: the most fds one datagram can carry.
	maxFDs = 253
	// readBuffer is the requested SO_RCVBUF; the kernel also caps the queue
	// at net.unix.max_dgram_qlen datagrams, beyond which senders block.
	readBuffer = 256 << 10
)

// ErrPathTooLong is returned by Listen for a path a sockaddr_un cannot hold.
var ErrPathTooLong = errors.New("notify: socket path longer than 107 bytes")

// Socket is a notify socket for one process.
type Socket struct {
	path string
	conn *net.UnixConn
	rc   syscall.RawConn
	ino  os.FileInfo // the socket file we bound; nil for an abstract name

	c        chan Message
	fn       func(Message) // ListenFunc's: takes each message instead of c
	ready    chan struct{}
	stopping chan struct{}
	// triggered is closed at the first WATCHDOG=trigger: sticky, like
	// ready, so that no flood of other messages can hide it.
	triggered chan struct{}
	done      chan struct{}
	dropped   atomic.Uint64
	closing   atomic.Bool

	mu     sync.Mutex
	status string
	err    error // why the reader stopped, if not Close

	closeOnce sync.Once
	closeErr  error
}

// Listen binds a unixgram socket at path (removing a stale socket file first),
// mode 0666 within whatever directory permissions the caller set, with
// SO_PASSCRED on, and starts reading in a goroutine. A path starting with "@"
// names a socket in the Linux abstract namespace (no file, nothing to
// unlink), which sd_notify(3) also understands.
//
// Each datagram is parsed and delivered on C. C is buffered; when the reader
// gets ahead of the consumer the oldest messages without READY=1, STOPPING=1
// or RELOADING=1 are dropped (counted by Dropped), and the READY and STOPPING
// states are also kept on the Socket (Ready, Stopping, Status), so they are
// never lost.
//
// A file that exists at path and is not a socket is not removed: Listen fails
// rather than delete something that is not ours.
func Listen(path string) (*Socket, error) { return listenWith(path, nil) }

// ListenFunc is Listen with each message handed to fn, on the reading
// goroutine, instead of queued on C (C is closed at Close, and carries
// nothing): a consumer that only records what it gets needs no goroutine
// of its own, which with one socket per supervised process adds up. fn
// runs after the sticky state (Ready, Stopping, Triggered, Status) took
// the message in, one message at a time, in order; while it runs, later
// datagrams wait in the socket's buffer, so it must not block for long;
// and Close waits for the reader, so fn must never wait for anything the
// caller of Close may hold.
func ListenFunc(path string, fn func(Message)) (*Socket, error) {
	if fn == nil {
		return nil, errors.New("notify: ListenFunc without a function")
	}
	return listenWith(path, fn)
}

func listenWith(path string, fn func(Message)) (*Socket, error) {
	if path == "" || path == "@" {
		return nil, fmt.Errorf("notify: empty socket path %q", path)
	}
	if len(path) > maxPathLen {
		return nil, fmt.Errorf("%w: %q is %d bytes", ErrPathTooLong, path, len(path))
	}
	if strings.IndexByte(path, 0) >= 0 {
		return nil, fmt.Errorf("notify: socket path %q contains NUL", path)
	}
	abstract := path[0] == '@'
	if !abstract {
		if err := removeStale(path); err != nil {
			return nil, err
		}
	}

	// SO_PASSCRED is set before bind (Control runs between socket and bind),
	// so no datagram can arrive without credentials.
	var sockErr error
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		if err := c.Control(func(fd uintptr) {
			sockErr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_PASSCRED, 1)
		}); err != nil {
			return err
		}
		return sockErr
	}}
	pc, err := lc.ListenPacket(context.Background(), "unixgram", path)
	if err != nil {
		return nil, fmt.Errorf("notify: listen %q: %w", path, err)
	}
	conn := pc.(*net.UnixConn)
	qlen := queueLen
	if fn != nil {
		qlen = 0 // never sent on
	}
	s := &Socket{
		path:      path,
		conn:      conn,
		fn:        fn,
		c:         make(chan Message, qlen),
		ready:     make(chan struct{}),
		stopping:  make(chan struct{}),
		triggered: make(chan struct{}),
		done:      make(chan struct{}),
	}
	fail := func(err error) (*Socket, error) {
		conn.Close()
		if !abstract {
			os.Remove(path)
		}
		return nil, err
	}
	if !abstract {
		// bind(2) applies the umask; the app may run as another user, and
		// access is meant to be governed by the directory alone.
		if err := os.Chmod(path, 0o666); err != nil {
			return fail(fmt.Errorf("notify: %w", err))
		}
		if s.ino, err = os.Lstat(path); err != nil {
			return fail(fmt.Errorf("notify: %w", err))
		}
	}
	// Best effort: the kernel clamps it to net.core.rmem_max.
	_ = conn.SetReadBuffer(readBuffer)
	if s.rc, err = conn.SyscallConn(); err != nil {
		return fail(fmt.Errorf("notify: %w", err))
	}
	go s.run()
	return s, nil
}

// removeStale removes a socket file left at path by an earlier run (binding
// fails with EADDRINUSE otherwise).
func removeStale(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("notify: %w", err)
	}
	if fi.Mode().Type() != fs.ModeSocket {
		return fmt.Errorf("notify: %s exists and is not a socket; not removing it", path)
	}
	// A socket file is stale when nothing is bound to it any more: connect
	// is refused. Stealing a live one would cut its process off silently.
	if c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: path, Net: "unixgram"}); err == nil {
		c.Close()
		return fmt.Errorf("notify: %s is in use by a live socket", path)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("notify: remove stale socket: %w", err)
	}
	return nil
}

// Path returns the path given to Listen: the value for NOTIFY_SOCKET.
func (s *Socket) Path() string { return s.path }

// C returns the channel of parsed messages. It is closed after Close, or if
// the reader stops on an unexpected error (see Err).
func (s *Socket) C() <-chan Message { return s.c }

// Ready returns a channel closed once READY=1 has arrived, at the latest
// when the message carrying it is queued on C.
func (s *Socket) Ready() <-chan struct{} { return s.ready }

// Stopping returns a channel closed once STOPPING=1 has arrived.
func (s *Socket) Stopping() <-chan struct{} { return s.stopping }

// Triggered is closed once the process sent WATCHDOG=trigger.
func (s *Socket) Triggered() <-chan struct{} { return s.triggered }

// Status returns the last STATUS= received ("" if none).
func (s *Socket) Status() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.status
}

// Dropped returns how many datagrams were discarded: dropped on overflow of
// C, oversized, or unparsable.
func (s *Socket) Dropped() uint64 { return s.dropped.Load() }

// Err returns the error that stopped the reader, or nil if it is running or
// was stopped by Close.
func (s *Socket) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// Close stops reading, closes the socket and unlinks its file. It is
// idempotent and returns only after the reader goroutine has exited.
func (s *Socket) Close() error {
	s.closeOnce.Do(func() {
		s.closing.Store(true)
		// Closing the conn wakes the reader parked in the netpoller.
		err := s.conn.Close()
		<-s.done
		if s.ino != nil {
			// Unlink only the file we bound: if a new Socket was since
			// bound at the same path (a restart), it is not ours to remove.
			if fi, lerr := os.Lstat(s.path); lerr == nil && os.SameFile(fi, s.ino) {
				if rerr := os.Remove(s.path); rerr != nil && err == nil {
					err = rerr
				}
			}
		}
		s.closeErr = err
	})
	return s.closeErr
}

// run reads datagrams until Close. It never blocks except in recvmsg (parked
// in the netpoller, not spinning), so Close can always stop it.
func (s *Socket) run() {
	defer close(s.done)
	defer close(s.c)
	for {
		var n, oobn, flags int
		var rerr error
		// The buffers are taken only once a datagram is there: a process
		// sends a few messages in its life, and a socket idle in the
		// poller holds none (5 KiB each, with 400 processes 2 MiB).
		var b *recvBufs
		err := s.rc.Read(func(fd uintptr) bool {
			b = recvPool.Get().(*recvBufs)
			for {
				// MSG_CMSG_CLOEXEC: agentd forks app processes all the
				// time; a received fd without close-on-exec could leak into
				// one of them and keep a sender's barrier open.
				n, oobn, flags, _, rerr = unix.Recvmsg(int(fd), b.buf, b.oob, unix.MSG_CMSG_CLOEXEC|unix.MSG_DONTWAIT)
				if rerr != unix.EINTR {
					break
				}
			}
			if rerr == unix.EAGAIN {
				recvPool.Put(b) // park until readable
				b = nil
				return false
			}
			return true
		})
		if err != nil {
			if b != nil {
				recvPool.Put(b)
			}
			if !s.closing.Load() {
				s.setErr(fmt.Errorf("notify: read: %w", err))
			}
			return
		}
		buf, oob := b.buf, b.oob
		if oobn > 0 {
			pid := s.handleOOB(oob[:oobn])
			if rerr == nil {
				s.handle(buf[:n], flags, pid)
			}
			// The fds are closed only after the datagram is handled: the
			// barrier's promise is that everything sent before it has
			// been processed when the sender sees its fd closed.
			closeFDs(oob[:oobn])
		} else if rerr == nil {
			s.handle(buf[:n], flags, 0)
		}
		recvPool.Put(b)
		if rerr != nil {
			// Not EAGAIN or EINTR: retrying a persistent error would spin.
			s.setErr(fmt.Errorf("notify: recvmsg: %w", rerr))
			return
		}
	}
}

// recvBufs are one datagram's buffers: its bytes and its control
// messages (credentials, and the most fds one datagram can carry).
type recvBufs struct{ buf, oob []byte }

var recvPool = sync.Pool{New: func() any {
	return &recvBufs{buf: make([]byte, MaxMessageSize), oob: make([]byte, unix.CmsgSpace(unix.SizeofUcred)+unix.CmsgSpace(maxFDs*4))}
}}

func (s *Socket) setErr(err error) {
	s.mu.Lock()
	s.err = err
	s.mu.Unlock()
}

// handleOOB returns the sender PID from SCM_CREDENTIALS (0 if absent).
func (s *Socket) handleOOB(oob []byte) int {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return 0
	}
	for i := range msgs {
		if msgs[i].Header.Level == unix.SOL_SOCKET && msgs[i].Header.Type == unix.SCM_CREDENTIALS {
			if cred, err := unix.ParseUnixCredentials(&msgs[i]); err == nil {
				return int(cred.Pid)
			}
		}
	}
	return 0
}

// closeFDs closes every fd received with SCM_RIGHTS. This is not optional:
// `systemd-notify --ready` (sd_notify_barrier) sends BARRIER=1 with the write
// end of a pipe and blocks, up to 5 s, until the receiver closes it; keeping
// it, even by accident, makes every readiness notification take 5 s (and
// leaks an fd per message). Apps may also attach fds (FDSTORE=1), which
// agentd does not keep for apps.
func closeFDs(oob []byte) {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return
	}
	for i := range msgs {
		if msgs[i].Header.Level != unix.SOL_SOCKET || msgs[i].Header.Type != unix.SCM_RIGHTS {
			continue
		}
		fds, err := unix.ParseUnixRights(&msgs[i])
		if err != nil {
			continue
		}
		for _, fd := range fds {
			unix.Close(fd)
		}
	}
}

// handle parses one datagram, updates the sticky state and queues it.
func (s *Socket) handle(b []byte, flags, pid int) {
	if flags&unix.MSG_TRUNC != 0 {
		s.dropped.Add(1) // oversized: the rest of it is gone
		return
	}
	m, err := Parse(b)
	if err != nil {
		s.dropped.Add(1)
		return
	}
	m.SenderPID = pid
	if st, ok := statusOf(&m); ok {
		s.mu.Lock()
		s.status = st
		s.mu.Unlock()
	}
	// The sticky state is updated before queueing, so a consumer that has
	// received a message from C always sees Ready, Stopping and Status at
	// least as new as it. Only this goroutine closes the channels.
	if m.Ready && !isClosed(s.ready) {
		close(s.ready)
	}
	if m.Stopping && !isClosed(s.stopping) {
		close(s.stopping)
	}
	if m.WatchdogTrigger && !isClosed(s.triggered) {
		close(s.triggered)
	}
	if s.fn != nil {
		s.fn(m)
		return
	}
	s.push(m)
}

func isClosed(c chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// push queues m on C without ever blocking, so a consumer that stops reading
// cannot stall the reader (and with it the barrier replies), and a flood
// costs at most queueLen messages of memory. On overflow the oldest message
// that is not important is dropped; if all queued messages are important, a
// new unimportant message is dropped instead, and a new important one
// replaces the oldest message of a kind (READY, STOPPING, RELOADING
// combination) that also occurs later, so every kind's latest message
// survives. Only this goroutine sends on C, so a receive always makes room.
func (s *Socket) push(m Message) {
	select {
	case s.c <- m:
		return
	default:
	}
	// Fast path: the oldest message is unimportant, drop it.
	var head Message
	select {
	case head = <-s.c:
	default:
		// The consumer emptied C meanwhile.
		s.c <- m
		return
	}
	if !head.important() {
		s.dropped.Add(1)
		s.c <- m
		return
	}
	// Slow path: take everything out, choose a victim, put the rest back.
	q := make([]Message, 0, queueLen+1)
	q = append(q, head)
drain:
	for {
		select {
		case x := <-s.c:
			q = append(q, x)
		default:
			break drain
		}
	}
	q = append(q, m)
	if len(q) > queueLen {
		q = evict(q)
		s.dropped.Add(1)
	}
	for _, x := range q {
		s.c <- x
	}
}

// evict removes one message from q (oldest first) by the policy described
// at push.
func evict(q []Message) []Message {
	for i := range q {
		if !q[i].important() {
			return append(q[:i], q[i+1:]...)
		}
	}
	for i := range q {
		for j := i + 1; j < len(q); j++ {
			if q[j].kind() == q[i].kind() {
				return append(q[:i], q[i+1:]...)
			}
		}
	}
	return q[1:] // unreachable while queueLen exceeds the number of kinds
}
