package api

import (
	"bytes"
	"errors"
	"io"
	"testing"
)

func TestFrames(t *testing.T) {
	var buf bytes.Buffer
	w := NewFrameWriter(&buf)
	big := bytes.Repeat([]byte("x"), MaxFrame+10)
	w.Write(FrameStdin, []byte("hi"))
	w.Write(FrameEOF, nil)
	w.Write(FrameResize, ResizeData(40, 100))
	w.Write(FrameStdout, big)
	r := NewFrameReader(&buf)
	for _, want := range []Frame{{FrameStdin, []byte("hi")}, {FrameEOF, []byte{}}, {FrameResize, ResizeData(40, 100)},
		{FrameStdout, big[:MaxFrame]}, {FrameStdout, big[MaxFrame:]}} {
		f, err := r.Read()
		if err != nil {
			t.Fatal(err)
		}
		if f.Type != want.Type || !bytes.Equal(f.Data, want.Data) {
			t.Fatalf("frame %c of %d bytes, want %c of %d", f.Type, len(f.Data), want.Type, len(want.Data))
		}
	}
	if _, err := r.Read(); err != io.EOF {
		t.Fatalf("after the last frame: %v, want io.EOF", err)
	}
	if rows, cols, err := ParseResize(ResizeData(40, 100)); err != nil || rows != 40 || cols != 100 {
		t.Fatalf("ParseResize: %d %d %v", rows, cols, err)
	}
	if _, _, err := ParseResize([]byte{1}); err == nil {
		t.Fatal("ParseResize accepted 1 byte")
	}
	// Cut within a frame; a length past MaxFrame.
	if _, err := NewFrameReader(bytes.NewReader([]byte{FrameStdin, 0, 0, 0, 5, 'a'})).Read(); err != io.ErrUnexpectedEOF {
		t.Fatalf("truncated frame: %v", err)
	}
	if _, err := NewFrameReader(bytes.NewReader([]byte{FrameStdin, 0xff, 0, 0, 0})).Read(); !errors.Is(err, ErrFrameTooLarge) {
		t.Fatalf("huge frame: %v", err)
	}
}

func FuzzFrameReader(f *testing.F) {
	f.Add([]byte{FrameStdin, 0, 0, 0, 2, 'h', 'i', FrameEOF, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		r := NewFrameReader(bytes.NewReader(b))
		for {
			fr, err := r.Read()
			if err != nil {
				return
			}
			if len(fr.Data) > MaxFrame {
				t.Fatalf("frame of %d bytes", len(fr.Data))
			}
		}
	})
}
