// Package logs reads app output that processes wrote to files under the
// state directory (the embedded mode, where journald may not run). Each
// process writes its stdout and stderr straight to its own file,
// "vN.TYPE.I.log" (the release phase: "vN.release.log"), so its output
// never depends on agentd staying alive.
package logs

import (
	"bufio"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/agentd/agentd/agentd/api"
)

// Options select what Read returns.
type Options struct {
	N       int    // last N lines of each file (0: none of the past, only new lines with Follow)
	Follow  bool   // keep reading new lines until ctx ends
	Process string // "web.1"; "" for all
	Release string // "v3"; "" for all
}

type file struct {
	path, release, process string
	version                int
	off                    int64
}

// list returns the log files in dir that match opt, oldest release first.
func list(dir string, opt Options) ([]*file, error) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []*file
	for _, e := range entries {
		base, ok := strings.CutSuffix(e.Name(), ".log")
		if !ok {
			continue
		}
		rel, proc, ok := strings.Cut(base, ".")
		if !ok || !strings.HasPrefix(rel, "v") {
			continue
		}
		v, err := strconv.Atoi(rel[1:])
		if err != nil {
			continue
		}
		// --process takes a process (web.1) or a whole type (web).
		if (opt.Process != "" && proc != opt.Process && !strings.HasPrefix(proc, opt.Process+".")) || (opt.Release != "" && rel != opt.Release) {
			continue
		}
		out = append(out, &file{path: filepath.Join(dir, e.Name()), release: rel, process: proc, version: v})
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].version != out[j].version {
			return out[i].version < out[j].version
		}
		return out[i].process < out[j].process
	})
	return out, nil
}

// Read calls fn for the last opt.N lines of every matching file, then, with
// opt.Follow, for every new line until ctx ends, picking up files created
// meanwhile (a new release's processes).
func Read(ctx context.Context, dir string, opt Options, fn func(api.LogLine) error) error {
	files, err := list(dir, opt)
	if err != nil {
		return err
	}
	seen := map[string]*file{}
	for _, f := range files {
		seen[f.path] = f
		if err := tail(f, opt.N, fn); err != nil {
			return err
		}
	}
	if !opt.Follow {
		return nil
	}
	// Files are polled: an inotify watch per file would cost more code than
	// a 250 ms poll costs CPU for a human watching logs.
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
		files, err := list(dir, opt)
		if err != nil {
			return err
		}
		for _, f := range files {
			if old, ok := seen[f.path]; ok {
				f = old
			} else {
				seen[f.path] = f
			}
			if err := readFrom(f, fn); err != nil {
				return err
			}
		}
	}
}

// tail emits the last n lines of f and leaves f.off at its end.
func tail(f *file, n int, fn func(api.LogLine) error) error {
	fh, err := os.Open(f.path)
	if err != nil {
		return err
	}
	defer fh.Close()
	size, err := fh.Seek(0, io.SeekEnd)
	if err != nil {
		return err
	}
	f.off = size
	if n <= 0 {
		return nil
	}
	// Read backwards in blocks until n line ends are found.
	const block = 64 << 10
	start := size
	var buf []byte
	for start > 0 && strings.Count(string(buf), "\n") <= n {
		s := max(0, start-block)
		b := make([]byte, start-s)
		if _, err := fh.ReadAt(b, s); err != nil && err != io.EOF {
			return err
		}
		buf = append(b, buf...)
		start = s
	}
	lines := strings.Split(strings.TrimSuffix(string(buf), "\n"), "\n")
	if start > 0 && len(lines) > 0 {
		lines = lines[1:] // a partial line
	}
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	for _, l := range lines {
		if l == "" && len(lines) == 1 {
			continue
		}
		if err := fn(api.LogLine{Release: f.release, Process: f.process, Line: l}); err != nil {
			return err
		}
	}
	return nil
}

// readFrom emits the complete lines appended to f since f.off.
func readFrom(f *file, fn func(api.LogLine) error) error {
	fh, err := os.Open(f.path)
	if err != nil {
		return nil // removed meanwhile (app destroyed)
	}
	defer fh.Close()
	if _, err := fh.Seek(f.off, io.SeekStart); err != nil {
		return err
	}
	r := bufio.NewReader(fh)
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return nil // partial line: wait for its end
		}
		f.off += int64(len(line))
		if err := fn(api.LogLine{Release: f.release, Process: f.process, Line: strings.TrimSuffix(line, "\n")}); err != nil {
			return err
		}
	}
}
