package loadgen

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"syscall"
)

// Failure classes. They are coarse on purpose: a deploy report needs to tell
// "nobody was listening" (refused) from "a connection was cut under a request"
// (reset, eof) from "the app was too slow" (timeout) from "the app answered
// with an error" (non2xx), not to reproduce every error text.
const (
	ClassRefused = "refused" // connect got ECONNREFUSED: no listener (an outage)
	ClassReset   = "reset"   // ECONNRESET or EPIPE: the peer aborted the connection
	ClassEOF     = "eof"     // connection closed before a full response (incl. short bodies)
	ClassTimeout = "timeout" // Config.Timeout or a network timeout expired
	ClassNon2xx  = "non2xx"  // a complete response with a status outside 200–299
	ClassOther   = "other"   // anything else (malformed response, DNS, ...)
)

// classOrder is an array so that Run can size its counters by it.
var classOrder = [...]string{ClassRefused, ClassReset, ClassEOF, ClassTimeout, ClassNon2xx, ClassOther}

// Classes lists every failure class in the order Result.String prints them.
var Classes = classOrder[:]

// errServerClosedIdleText is the text of net/http's unexported
// errServerClosedIdle, returned when a kept-alive connection was closed by the
// server just as a request was sent on it. It cannot be matched with errors.Is.
const errServerClosedIdleText = "server closed idle connection"

// Classify names the failure class of one request's outcome: err is the error
// from sending the request or reading its body (nil if both succeeded) and
// status the response status (0 if there was none). It returns "" for a
// success (err == nil and a 2xx status) and one of the Class constants
// otherwise.
//
// Connection-level causes are checked before timeouts so that a reset that
// happens to be reported through a timeout-capable error type is still called
// a reset: what a deploy report needs is the first cause, not the symptom.
func Classify(err error, status int) string {
	if err == nil {
		if status >= 200 && status <= 299 {
			return ""
		}
		return ClassNon2xx
	}
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return ClassRefused
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return ClassReset
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF),
		strings.Contains(err.Error(), errServerClosedIdleText):
		return ClassEOF
	}
	var ne net.Error
	if (errors.As(err, &ne) && ne.Timeout()) || errors.Is(err, context.DeadlineExceeded) {
		return ClassTimeout
	}
	return ClassOther
}

// classIndex maps a class to its slot in Run's counters.
func classIndex(class string) int {
	for i, c := range classOrder {
		if c == class {
			return i
		}
	}
	return len(classOrder) - 1 // ClassOther
}
