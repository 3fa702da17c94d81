package api

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// SendBlobs sends the contents an upload lacks, uncompressed, in one
// request: for each, a line "SHA256 SIZE\n" and then SIZE bytes. It
// returns how many content bytes it sent. A file whose size changed since
// it was hashed fails the send; one whose bytes changed is refused by
// agentd (they no longer match the hash).
//
// The request is written on a connection of its own rather than through
// net/http's transport, for two reasons the 256 MB figures of
// docs/benchmarks-history.md show: the body's length is known in advance, so it
// goes with a Content-Length instead of in 32 KiB chunks (which agentd's
// server would read 28 KiB at a time); and each file goes to the socket
// with sendfile(2), without passing through this process's memory.
func (c *Client) SendBlobs(ctx context.Context, id string, blobs []BlobRef) (int64, error) {
	var length int64
	for _, b := range blobs {
		length += int64(len(blobHeader(b))) + b.Size
	}
	conn, done, err := c.uploadConn(ctx)
	if err != nil {
		return 0, err
	}
	defer done()
	head := c.postHead("/v1/uploads/"+url.PathEscape(id)+"/blobs", "Content-Type: application/octet-stream\r\nAccept: application/json\r\n"+
		"Content-Length: "+strconv.FormatInt(length, 10)+"\r\nConnection: close\r\n")
	var sent int64
	var werr error
	if _, err := io.WriteString(conn, head); err != nil {
		werr = &connError{err}
	} else {
		sent, werr = sendBlobFiles(conn, blobs)
	}
	var ce *connError
	if werr != nil && !errors.As(werr, &ce) {
		// This side failed (a file gone or shrunk): closing the
		// connection ends the request, and agentd keeps nothing of it.
		return sent, werr
	}
	// agentd may refuse the content before it has all been sent (bytes
	// that do not match their hash): its answer says why, so read it
	// even after a failed write.
	resp, rerr := http.ReadResponse(bufio.NewReader(conn), nil)
	switch {
	case ctx.Err() != nil:
		return sent, c.mapError(ctx.Err())
	case rerr != nil && werr != nil:
		return sent, werr
	case rerr != nil:
		return sent, fmt.Errorf("reading agentd's answer to the upload: %w", rerr)
	}
	defer resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return sent, decodeError(resp)
	}
	drainClose(resp.Body)
	return sent, werr
}

// uploadConn is a connection of its own to agentd for an upload request
// written by hand (SendBlobs, HandOverBlobs); a cancelled ctx ends
// whatever read or write is under way on it. done closes it.
func (c *Client) uploadConn(ctx context.Context) (*net.UnixConn, func(), error) {
	d := net.Dialer{Timeout: 10 * time.Second}
	conn, err := d.DialContext(ctx, "unix", c.SocketPath)
	if err != nil {
		return nil, nil, c.mapError(err)
	}
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	return conn.(*net.UnixConn), func() { stop(); conn.Close() }, nil
}

// postHead is the request line and headers of POST target (a path),
// with headers (each ending in CRLF) and the blank line that ends them.
func (c *Client) postHead(target, headers string) string {
	head := "POST " + target + " HTTP/1.1\r\nHost: agentd\r\n" + headers
	if c.UserAgent != "" {
		head += "User-Agent: " + c.UserAgent + "\r\n"
	}
	return head + "\r\n"
}

// connError is a failed write to agentd's socket, as opposed to a failure
// to read the file being sent.
type connError struct{ err error }

func (e *connError) Error() string { return e.err.Error() }
func (e *connError) Unwrap() error { return e.err }

func blobHeader(b BlobRef) string {
	return b.SHA256 + " " + strconv.FormatInt(b.Size, 10) + "\n"
}

// sendBlobFiles writes each content's header line and then its bytes.
func sendBlobFiles(conn *net.UnixConn, blobs []BlobRef) (int64, error) {
	rc, err := conn.SyscallConn()
	if err != nil {
		return 0, err
	}
	var sent int64
	for _, b := range blobs {
		n, err := sendBlobFile(conn, rc, b)
		sent += n
		if err != nil {
			return sent, err
		}
	}
	return sent, nil
}

func sendBlobFile(conn *net.UnixConn, rc syscall.RawConn, b BlobRef) (int64, error) {
	f, err := openNoFollow(b.Path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	if _, err := io.WriteString(conn, blobHeader(b)); err != nil {
		return 0, &connError{err}
	}
	src := int(f.Fd())
	var done int64
	var serr error
	err = rc.Write(func(fd uintptr) bool {
		for done < b.Size {
			n, err := unix.Sendfile(int(fd), src, nil, int(min(b.Size-done, 1<<30)))
			if n > 0 {
				done += int64(n)
			}
			switch {
			case errors.Is(err, unix.EAGAIN):
				return false // wait until the socket takes more
			case errors.Is(err, unix.EINTR):
			case err != nil:
				serr = &connError{os.NewSyscallError("sendfile", err)}
				return true
			case n == 0:
				serr = fmt.Errorf("%s: file shrank while being sent", b.Path)
				return true
			}
		}
		return true
	})
	if serr != nil {
		return done, serr
	}
	if err != nil {
		return done, &connError{err} // the deadline of a cancelled context
	}
	return done, nil
}

func openNoFollow(p string) (*os.File, error) {
	return os.OpenFile(p, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
}
