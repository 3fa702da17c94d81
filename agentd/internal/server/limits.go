package server

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"

	"github.com/agentd/agentd/agentd/api"
)

// Bounds on what one client can hold up. Each request has its own
// goroutine and an upload is read before the app's operation lock is
// taken, so a slow client delays nobody else; these bound how long it can
// tie up a connection and a goroutine of agentd.
const (
	// maxBody bounds a JSON request body.
	maxBody = 1 << 20
	// bodyTimeout bounds the reading of a JSON request body.
	bodyTimeout = 30 * time.Second
	// DefaultUploadIdle is how long an upload may send nothing before it
	// is cut (Server.UploadIdle).
	DefaultUploadIdle = 60 * time.Second
	// writeTimeout bounds each write of a streamed answer to a client that
	// stopped reading: the operation goes on, its progress is dropped.
	writeTimeout = 30 * time.Second
)

// errUploadStalled is what a read of an upload that sent nothing for too
// long returns.
var errUploadStalled = errors.New("the upload stalled")

// idleBody is an upload body whose connection read deadline moves forward
// as data arrives: a client may send slowly, but not stop sending.
type idleBody struct {
	r    io.Reader
	rc   *http.ResponseController
	idle time.Duration
}

func newIdleBody(w http.ResponseWriter, r io.Reader, idle time.Duration) *idleBody {
	if idle <= 0 {
		idle = DefaultUploadIdle
	}
	return &idleBody{r: r, rc: http.NewResponseController(w), idle: idle}
}

func (b *idleBody) Read(p []byte) (int, error) {
	b.rc.SetReadDeadline(time.Now().Add(b.idle))
	n, err := b.r.Read(p)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return n, fmt.Errorf("%w: nothing received for %s", errUploadStalled, b.idle)
	}
	if err == io.EOF {
		// Done: no deadline for the rest of the exchange (the streamed
		// answer of a deploy may take many minutes).
		b.rc.SetReadDeadline(time.Time{})
	}
	return n, err
}

// private lets a request through only from those who may change things:
// config vars and app output often hold secrets (DATABASE_URL, tokens
// printed at boot), so they are not for everyone who can connect.
func (s *Server) private(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		p := peerOf(r)
		if !s.mayChange(p) {
			writeErr(w, http.StatusForbidden, &api.Error{Code: api.CodeForbidden,
				Message: fmt.Sprintf("permission denied: uid %d may not read config vars or logs, which may hold secrets; only root and members of group %q may", p.UID, s.AdminGroup)})
			return
		}
		h(w, r)
	}
}
