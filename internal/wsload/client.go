package wsload

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/coder/websocket"
)

// How says how a connection ended.
type How string

const (
	// ClosedFrame: the server sent a WebSocket close frame.
	ClosedFrame How = "close-frame"
	// ClosedEOF: the connection ended without a close frame, by a FIN
	// (the server process's socket was shut down, or it exited).
	ClosedEOF How = "eof"
	// ClosedReset: the connection was reset (RST).
	ClosedReset How = "reset"
	// ClosedError: any other failure, a wrong echo included (see Conn.Err).
	ClosedError How = "error"
	// Open: still open when the run ended; the client closed it then.
	Open How = "open"
)

// Conn is what one connection of one client saw.
type Conn struct {
	// Client is the client's number (0..Clients-1), Attempt how many
	// connections it had made before this one.
	Client, Attempt int
	// Release, Process and PID are what the server's hello said.
	Release, Process string
	PID              int
	// ConnectedAt is when the hello was read, ClosedAt when the close was
	// seen (for Open: when the run ended).
	ConnectedAt, ClosedAt time.Time
	How                   How
	// Err is the error that ended the connection (nil for Open).
	Err error
	// Messages counts the echoes received and checked.
	Messages int
}

// runClient is one client: its first dial at first, then one connection
// after the other while Reconnect holds.
func (r *Run) runClient(id int, first time.Time) {
	defer r.wg.Done()
	counted := false
	defer func() {
		if !counted {
			r.firstDone()
		}
	}()
	t := time.NewTimer(time.Until(first))
	defer t.Stop()
	select {
	case <-r.ctx.Done():
		return
	case <-t.C:
	}
	for attempt := 0; ; {
		ws, c, err := r.dial(id, attempt)
		if err != nil {
			r.record(nil, err)
			if !r.cfg.Reconnect || r.ctx.Err() != nil {
				return
			}
			t.Reset(redialEvery)
			select {
			case <-r.ctx.Done():
				return
			case <-t.C:
			}
			continue
		}
		if r.cfg.OnConnect != nil {
			r.cfg.OnConnect(*c)
		}
		if !counted {
			counted = true
			r.firstDone()
		}
		r.exchange(ws, c)
		r.record(c, nil)
		if r.cfg.OnClose != nil {
			r.cfg.OnClose(*c)
		}
		attempt++
		if !r.cfg.Reconnect || c.How == Open {
			return
		}
	}
}

// dial connects and reads the hello.
func (r *Run) dial(id, attempt int) (*websocket.Conn, *Conn, error) {
	ctx, cancel := context.WithTimeout(r.ctx, DialTimeout)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, r.cfg.URL, &websocket.DialOptions{HTTPClient: r.client})
	if err != nil {
		return nil, nil, fmt.Errorf("wsload: client %d: dial: %w", id, err)
	}
	_, msg, err := ws.Read(ctx)
	if err != nil {
		ws.CloseNow()
		return nil, nil, fmt.Errorf("wsload: client %d: hello: %w", id, err)
	}
	c := &Conn{Client: id, Attempt: attempt, ConnectedAt: time.Now()}
	// "hello RELEASE PROCESS PID"
	f := strings.Fields(string(msg))
	if len(f) != 4 || f[0] != "hello" {
		ws.CloseNow()
		return nil, nil, fmt.Errorf("wsload: client %d: hello %q: want \"hello RELEASE PROCESS PID\"", id, msg)
	}
	c.Release, c.Process = f[1], f[2]
	if c.PID, err = strconv.Atoi(f[3]); err != nil {
		ws.CloseNow()
		return nil, nil, fmt.Errorf("wsload: client %d: hello %q: %w", id, msg, err)
	}
	return ws, c, nil
}

// exchange sends a message every Every and checks each echo, until the
// connection ends or the run does; it fills in how c ended.
func (r *Run) exchange(ws *websocket.Conn, c *Conn) {
	defer ws.CloseNow()
	// The reader is always waiting, so a close is seen when it happens.
	echoes := make(chan string, 1)
	ended := make(chan error, 1)
	quit := make(chan struct{})
	defer close(quit) // before CloseNow: the reader then stops at once
	go func() {
		for {
			_, msg, err := ws.Read(context.Background())
			if err != nil {
				ended <- err
				return
			}
			select {
			case echoes <- string(msg):
			case <-quit:
				return
			}
		}
	}()
	var tick <-chan time.Time
	if r.cfg.Every > 0 {
		tk := time.NewTicker(r.cfg.Every)
		defer tk.Stop()
		tick = tk.C
	}
	end := func(err error) {
		c.ClosedAt, c.Err, c.How = time.Now(), err, classify(err)
	}
	for n := 0; ; n++ {
		select {
		case <-r.ctx.Done():
			c.ClosedAt, c.How = time.Now(), Open
			return
		case err := <-ended:
			end(err)
			return
		case <-tick:
		}
		if r.sent.Add(1) > r.cfg.MaxMessages {
			tick = nil // the run's budget is spent: hold the connection only
			continue
		}
		msg := fmt.Sprintf("client %d attempt %d message %d", c.Client, c.Attempt, n)
		wctx, cancel := context.WithTimeout(r.ctx, EchoTimeout)
		err := ws.Write(wctx, websocket.MessageText, []byte(msg))
		if err == nil {
			select {
			case got := <-echoes:
				if got != msg {
					err = fmt.Errorf("echo %q of %q", got, msg)
				}
			case err = <-ended:
			case <-wctx.Done():
				err = wctx.Err()
			}
		}
		cancel()
		if r.ctx.Err() != nil {
			c.ClosedAt, c.How = time.Now(), Open
			return
		}
		if err != nil {
			end(fmt.Errorf("wsload: client %d: %w", c.Client, err))
			return
		}
		c.Messages++
	}
}

// classify names how err ended a connection.
func classify(err error) How {
	switch {
	case websocket.CloseStatus(err) != -1:
		return ClosedFrame
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return ClosedReset
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return ClosedEOF
	}
	return ClosedError
}
