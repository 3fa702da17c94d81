package state

import (
	"bytes"
	"encoding/json"
	"sync"
)

// encoder is an indenting JSON encoder with the buffer it writes to, kept
// for reuse: a state write on the way to a process start then encodes
// into memory that is already mapped. json.MarshalIndent (and the newline
// appended to it) made two or three fresh copies of the whole state per
// write, and a page fault on fresh memory costs 20–35 µs on the VMs this
// runs on.
type encoder struct {
	buf bytes.Buffer
	enc *json.Encoder
}

var encoders = sync.Pool{New: func() any {
	e := &encoder{}
	e.enc = json.NewEncoder(&e.buf)
	e.enc.SetIndent("", "  ")
	return e
}}

// encodeJSON calls f with v as indented JSON and a final newline, the
// bytes json.MarshalIndent gives and "\n". f must not keep them.
func encodeJSON(v any, f func([]byte) error) error {
	e := encoders.Get().(*encoder)
	defer encoders.Put(e)
	e.buf.Reset()
	if err := e.enc.Encode(v); err != nil {
		return err
	}
	return f(e.buf.Bytes())
}
