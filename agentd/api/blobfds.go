package api

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"

	"golang.org/x/sys/unix"
)

// Handing over open files instead of their bytes (POST
// /v1/uploads/{id}/fds): on a unix socket a client can pass agentd the
// file descriptor of each file it lacks (SCM_RIGHTS), and agentd reads
// the files itself, several at once. Nothing goes through the socket but
// one line per file, so neither side copies the content through it: on a
// 256 MB release that is most of the upload's time
// (docs/benchmarks-history.md). agentd hashes exactly the bytes it writes into its store, so a
// file changed after it was handed over is refused as a lie would be.
//
// The exchange, after agentd has answered the request with 101 Switching
// Protocols (the client sends nothing before: bytes read by agentd's HTTP
// server would lose the descriptors that came with them):
//
//	client: "SHA256 SIZE\n" with the file's descriptor, once per file
//	client: "\n" (done)
//	agentd: one line of JSON, FDResult, then closes
//
// agentd answers at once, without waiting for the rest, when a file is
// refused, or when a line arrives without a descriptor (a socket that
// does not carry them, such as one forwarded by ssh): then with
// CodeFDsNotCarried, and the client sends the bytes instead.

// FDUpgrade is the protocol name in the request's Upgrade header.
const FDUpgrade = "agentd-fds"

// CodeFDsNotCarried is FDResult's error code when a file's line arrived
// without its descriptor.
const CodeFDsNotCarried = "fds_not_carried"

// FDResult is agentd's one-line answer to handed-over files.
type FDResult struct {
	Files int64  `json:"files"` // files received whole and matching their hash
	Bytes int64  `json:"bytes"`
	Error *Error `json:"error,omitempty"`
}

// ErrFDsUnsupported is returned by [Client.HandOverBlobs] when the files
// could not be handed over and nothing was received: an agentd without
// the route, or a socket that does not carry descriptors. The caller
// sends the bytes instead ([Client.SendBlobs]).
var ErrFDsUnsupported = errors.New("agentd cannot take open files on this socket")

// HandOverBlobs hands agentd an open descriptor of each content an upload
// lacks and waits until agentd has read and checked them all. It returns
// how many content bytes agentd received.
func (c *Client) HandOverBlobs(ctx context.Context, id string, blobs []BlobRef) (int64, error) {
	files := make([]fdFile, len(blobs))
	for i, b := range blobs {
		files[i] = fdFile{line: blobHeader(b), path: b.Path}
	}
	var res FDResult
	err := c.fdExchange(ctx, "/v1/uploads/"+url.PathEscape(id)+"/fds", files, &res)
	return res.Bytes, err
}

// fdFile is one file to hand over: its line, and where to open it.
type fdFile struct{ line, path string }

// fdAnswer is agentd's answer to handed-over files: FDResult, or a type
// that embeds it.
type fdAnswer interface{ fdResult() *FDResult }

func (r *FDResult) fdResult() *FDResult { return r }

// fdExchange runs the exchange above on POST target and decodes agentd's
// answer into answer.
func (c *Client) fdExchange(ctx context.Context, target string, files []fdFile, answer fdAnswer) error {
	fr := answer.fdResult()
	conn, done, err := c.uploadConn(ctx)
	if err != nil {
		return err
	}
	defer done()
	head := c.postHead(target, "Connection: Upgrade\r\nUpgrade: "+FDUpgrade+"\r\nContent-Length: 0\r\n")
	if _, err := io.WriteString(conn, head); err != nil {
		return c.mapError(err)
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return c.orCancelled(ctx, fmt.Errorf("reading agentd's answer to the upload: %w", err))
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		defer resp.Body.Close()
		// agentd's own "no such upload" is JSON; an agentd without the
		// route answers 404 in plain text.
		routeless := resp.StatusCode == http.StatusNotFound && !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json")
		e := decodeError(resp)
		if routeless {
			return fmt.Errorf("%w: %w", ErrFDsUnsupported, e)
		}
		return e
	}
	werr := handOver(conn, files)
	if ce := (*connError)(nil); werr != nil && !errors.As(werr, &ce) {
		// A file that would not open here: agentd, waiting for the rest,
		// sees the connection end and stops; the cause is ours to tell.
		conn.CloseWrite()
		return werr
	}
	// agentd refuses a file as soon as it finds it wrong, and then reads
	// no more: its answer says why, so read it after a failed write too.
	line, rerr := br.ReadString('\n')
	if rerr == nil {
		rerr = json.Unmarshal([]byte(line), answer)
	}
	switch {
	case ctx.Err() != nil:
		return c.mapError(ctx.Err())
	case rerr != nil && werr != nil:
		return werr
	case rerr != nil:
		return fmt.Errorf("reading agentd's answer to the upload: %w", rerr)
	case fr.Error != nil && fr.Error.Code == CodeFDsNotCarried && fr.Files == 0:
		return fmt.Errorf("%w: %s", ErrFDsUnsupported, fr.Error.Message)
	case fr.Error != nil:
		return fr.Error
	}
	return werr
}

func (c *Client) orCancelled(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return c.mapError(ctx.Err())
	}
	return err
}

// handOver sends each file's line with its descriptor, then the last,
// empty line. Each descriptor is closed once sent: a tree of 100,000
// files never holds more than one open here.
func handOver(uc *net.UnixConn, files []fdFile) error {
	for _, ff := range files {
		f, err := openNoFollow(ff.path)
		if err != nil {
			return err
		}
		_, _, err = uc.WriteMsgUnix([]byte(ff.line), unix.UnixRights(int(f.Fd())), nil)
		f.Close()
		if err != nil {
			return &connError{err}
		}
	}
	if _, err := uc.Write([]byte("\n")); err != nil {
		return &connError{err}
	}
	return nil
}
