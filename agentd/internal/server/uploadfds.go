package server

// The contents an upload lacks, handed over as open files (api/blobfds.go
// has the exchange): agentd reads each file itself, on as many goroutines
// as it has cores, and the store hashes exactly what it writes, so the
// checks are the byte stream's.

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"runtime"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/agentd/agentd/agentd/api"
	"github.com/agentd/agentd/agentd/internal/store"
)

func (s *Server) putBlobFDs(w http.ResponseWriter, r *http.Request) {
	u, ok := s.upload(w, r)
	if !ok {
		return
	}
	s.takeFDs(w, r, func(uc *net.UnixConn) any {
		t0 := time.Now()
		res := s.receiveFDs(uc, blobLine, func(f fdFrame) error {
			if err := regular(f); err != nil {
				return err
			}
			return u.Put(f.hash, f.file)
		})
		s.Log.Debug("upload: handed-over files read", "upload", u.ID, "files", res.Files, "bytes", res.Bytes, "took", time.Since(t0), "err", res.Error)
		return res
	})
}

// takeFDs upgrades the request's connection to the exchange of
// api/blobfds.go, runs receive on it and writes the answer it returns.
func (s *Server) takeFDs(w http.ResponseWriter, r *http.Request, receive func(uc *net.UnixConn) any) {
	if !strings.EqualFold(r.Header.Get("Upgrade"), api.FDUpgrade) {
		writeErr(w, http.StatusBadRequest, &api.Error{Code: api.CodeBadRequest,
			Message: "handing over files needs the connection upgraded: send Connection: Upgrade and Upgrade: " + api.FDUpgrade})
		return
	}
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		s.Log.Error("upload: hijacking the connection", "err", err)
		return
	}
	defer conn.Close()
	uc, isUnix := conn.(*net.UnixConn)
	if !isUnix || brw.Reader.Buffered() > 0 {
		// Bytes read ahead by the HTTP server lost the descriptors sent
		// with them; a TCP connection carries none.
		msg := "files can be handed over only on agentd's unix socket, after its 101 answer"
		b, _ := json.Marshal(&api.Error{Code: api.CodeBadRequest, Message: msg})
		fmt.Fprintf(brw, "HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s", len(b), b)
		brw.Flush()
		return
	}
	conn.SetDeadline(time.Time{})
	fmt.Fprintf(brw, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: %s\r\n\r\n", api.FDUpgrade)
	if err := brw.Flush(); err != nil {
		return
	}
	b, _ := json.Marshal(receive(uc))
	conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
	conn.Write(append(b, '\n'))
}

// receiveFDs reads the handed-over files until the last line or the first
// failure, which ends it at once, and gives each to put, on as many
// goroutines as there are cores. parse reads a file's line.
func (s *Server) receiveFDs(uc *net.UnixConn, parse func(line string) (fdFrame, error), put func(fdFrame) error) api.FDResult {
	idle := s.UploadIdle
	if idle <= 0 {
		idle = DefaultUploadIdle
	}
	rd := newFDReader(uc, parse)
	defer rd.close()

	var (
		mu    sync.Mutex
		res   api.FDResult
		first error
	)
	failed := func() bool {
		mu.Lock()
		defer mu.Unlock()
		return first != nil
	}
	fail := func(err error) {
		mu.Lock()
		defer mu.Unlock()
		if first == nil {
			first = err
		}
	}
	frames := make(chan fdFrame)
	var wg sync.WaitGroup
	for range runtime.GOMAXPROCS(0) {
		wg.Go(func() {
			for f := range frames {
				if failed() {
					f.file.Close()
					continue
				}
				err := put(f)
				f.file.Close()
				if err != nil {
					fail(err)
					continue
				}
				mu.Lock()
				res.Files++
				res.Bytes += f.size
				mu.Unlock()
			}
		})
	}
	for !failed() {
		uc.SetReadDeadline(time.Now().Add(idle))
		f, err := rd.next()
		if err == io.EOF {
			break
		}
		if err != nil {
			switch {
			case errors.Is(err, errNoFD):
				err = &fdsNotCarried{err}
			case errors.Is(err, os.ErrDeadlineExceeded):
				err = fmt.Errorf("%w: nothing received for %s", errUploadStalled, idle)
			case !errors.Is(err, store.ErrInvalid):
				err = fmt.Errorf("upload: reading handed-over files: %w", err)
			}
			fail(err)
			break
		}
		frames <- f
	}
	close(frames)
	wg.Wait()
	if first != nil {
		var nc *fdsNotCarried
		if errors.As(first, &nc) {
			res.Error = &api.Error{Code: api.CodeFDsNotCarried, Message: first.Error()}
		} else {
			_, res.Error = uploadError(first)
		}
	}
	return res
}

// regular refuses a handed-over file that is not a regular file: a pipe
// or a device could block or never end.
func regular(f fdFrame) error {
	fi, err := f.file.Stat()
	if err != nil {
		return fmt.Errorf("upload: %s: %w", f.name(), err)
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%w: %s was handed over as a %s, not a regular file", store.ErrInvalid, f.name(), fi.Mode().Type())
	}
	return nil
}

type fdsNotCarried struct{ err error }

func (e *fdsNotCarried) Error() string { return e.err.Error() }
func (e *fdsNotCarried) Unwrap() error { return e.err }

// fdFrame is one handed-over file.
type fdFrame struct {
	seq  int    // its place among the files handed over, from 0
	hash string // "" when staged
	size int64
	// exec and mtimeNs: a staged file's, as its manifest entry will say.
	exec    bool
	mtimeNs int64
	file    *os.File
}

// blobLine reads a handed-over content's line "SHA256 SIZE".
func blobLine(line string) (fdFrame, error) {
	hash, size, err := parseBlobHeader(line)
	return fdFrame{hash: hash, size: size}, err
}

// name is how errors name the file.
func (f fdFrame) name() string {
	if f.hash == "" {
		return fmt.Sprintf("staged file %d", f.seq+1)
	}
	return "sha256 " + f.hash
}

// fdReader reads the lines of handed-over files ("SHA256 SIZE\n", or
// "SIZE MODE MTIME_NS\n" when staged) and the descriptor that came with each.
type fdReader struct {
	uc    *net.UnixConn
	parse func(line string) (fdFrame, error)
	seq   int
	buf   []byte // received, not yet a whole line
	fds   []int  // received, not yet matched with a line
	oob   []byte
	read  []byte
}

func newFDReader(uc *net.UnixConn, parse func(line string) (fdFrame, error)) *fdReader {
	// The kernel delivers one message's descriptors per read, and the
	// client sends one per message: room for a few is plenty.
	return &fdReader{uc: uc, parse: parse, oob: make([]byte, unix.CmsgSpace(16*4)), read: make([]byte, 4096)}
}

var errNoFD = errors.New("a file's line came without its descriptor: this socket does not carry them (forwarded?)")

// next returns the next file, or io.EOF after the empty last line.
func (r *fdReader) next() (fdFrame, error) {
	for {
		if i := strings.IndexByte(string(r.buf), '\n'); i >= 0 {
			line := string(r.buf[:i])
			r.buf = r.buf[i+1:]
			if line == "" {
				return fdFrame{}, io.EOF
			}
			f, err := r.parse(line)
			if err != nil {
				return fdFrame{}, err
			}
			if len(r.fds) == 0 {
				return fdFrame{}, errNoFD
			}
			fd := r.fds[0]
			r.fds = r.fds[1:]
			f.seq = r.seq
			r.seq++
			f.file = os.NewFile(uintptr(fd), f.name())
			return f, nil
		}
		if len(r.buf) > 256 {
			return fdFrame{}, fmt.Errorf("%w: a file's line longer than any \"SHA256 SIZE\"", store.ErrInvalid)
		}
		n, oobn, flags, _, err := r.uc.ReadMsgUnix(r.read, r.oob)
		if oobn > 0 {
			if cms, perr := unix.ParseSocketControlMessage(r.oob[:oobn]); perr == nil {
				for _, cm := range cms {
					if fds, err := unix.ParseUnixRights(&cm); err == nil {
						r.fds = append(r.fds, fds...)
					}
				}
			}
		}
		if flags&unix.MSG_CTRUNC != 0 {
			return fdFrame{}, fmt.Errorf("%w: more descriptors in one message than one per line", store.ErrInvalid)
		}
		r.buf = append(r.buf, r.read[:n]...)
		switch {
		case err == io.EOF || err == nil && n == 0:
			return fdFrame{}, fmt.Errorf("%w: the connection ended before the last, empty line", store.ErrInvalid)
		case err != nil:
			return fdFrame{}, err
		}
	}
}

// close closes the descriptors received and never returned.
func (r *fdReader) close() {
	for _, fd := range r.fds {
		unix.Close(fd)
	}
	r.fds = nil
}
