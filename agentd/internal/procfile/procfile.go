// Package procfile parses a release's Procfile: one "TYPE: COMMAND" line per
// process type, as Heroku and foreman read it.
//
// Unlike foreman, which silently skips lines it does not understand, Parse
// rejects them with the line number: a typo in a Procfile must fail the
// deploy's prepare phase, not quietly drop a process type.
package procfile

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"unicode/utf8"
)

const (
	// MaxSize caps a Procfile. Real ones are a few lines; the cap keeps a
	// hostile or mistaken artifact (a Procfile that is really a log file)
	// from being read into memory whole.
	MaxSize = 64 << 10
	// MaxLineLength caps one line, so an error can quote it sensibly and no
	// command is absurdly long for a process table.
	MaxLineLength = 8 << 10
	// MaxTypeLength caps a process type name: it appears in process names
	// (web.1), journald fields and metrics labels.
	MaxTypeLength = 30
	// ReleaseType is the process type whose command is the release phase,
	// run once per deploy rather than kept running.
	ReleaseType = "release"
)

// Entry is one process type and its command.
type Entry struct {
	Type    string
	Command string
	Line    int // 1-based line number in the Procfile, for messages
}

// Procfile is a parsed Procfile: its entries in file order.
type Procfile struct {
	entries []Entry
}

// Parse reads a Procfile. Blank lines and lines starting with '#' are
// ignored, CRLF line ends are accepted. Errors name the offending line, as in
// "Procfile line 3: ...".
func Parse(r io.Reader) (*Procfile, error) {
	// Read one byte past the cap so an oversized file is detected without
	// reading it all.
	data, err := io.ReadAll(io.LimitReader(r, MaxSize+1))
	if err != nil {
		return nil, fmt.Errorf("reading Procfile: %w", err)
	}
	if len(data) > MaxSize {
		return nil, fmt.Errorf("Procfile is larger than %d KiB", MaxSize>>10)
	}
	// Editors on Windows may start the file with a UTF-8 byte order mark; it
	// would otherwise become part of the first process type.
	data = bytes.TrimPrefix(data, []byte("\xef\xbb\xbf"))

	p := &Procfile{}
	seen := map[string]int{} // type -> line it was defined on
	sc := bufio.NewScanner(bytes.NewReader(data))
	// The whole file is in memory and at most MaxSize long, so a buffer of
	// that size means the scanner never fails with "token too long"; the
	// line length is checked below with a clearer message.
	sc.Buffer(make([]byte, 0, 4096), MaxSize+1)
	n := 0
	for sc.Scan() {
		n++
		e, ok, err := parseLine(sc.Text(), n)
		if err != nil {
			return nil, err
		}
		if !ok {
			continue
		}
		if prev, dup := seen[e.Type]; dup {
			return nil, lineErr(n, "process type %q is already defined on line %d", e.Type, prev)
		}
		seen[e.Type] = n
		p.entries = append(p.entries, e)
	}
	if err := sc.Err(); err != nil {
		// Cannot happen with an in-memory reader and a buffer as large as the
		// input, but a silent truncation would be worse than a message.
		return nil, fmt.Errorf("reading Procfile: %w", err)
	}
	if len(p.Types()) == 0 {
		if _, ok := p.Release(); ok {
			return nil, errors.New("Procfile defines no process types (only a release command)")
		}
		return nil, errors.New("Procfile defines no process types")
	}
	return p, nil
}

// parseLine parses one line. ok is false for blank and comment lines.
func parseLine(line string, n int) (e Entry, ok bool, err error) {
	// bufio.ScanLines already drops one trailing '\r' of a CRLF line end.
	if len(line) > MaxLineLength {
		return e, false, lineErr(n, "line is longer than %d bytes", MaxLineLength)
	}
	if strings.IndexByte(line, 0) >= 0 {
		return e, false, lineErr(n, "contains a NUL byte (is this a binary file?)")
	}
	if !utf8.ValidString(line) {
		// Commands travel in JSON through the control API, which would
		// silently replace invalid bytes.
		return e, false, lineErr(n, "is not valid UTF-8")
	}
	trimmed := strings.TrimSpace(line)
	if trimmed == "" || strings.HasPrefix(trimmed, "#") {
		return e, false, nil
	}
	typ, cmd, found := strings.Cut(trimmed, ":")
	if !found {
		return e, false, lineErr(n, "expected \"TYPE: COMMAND\", found no ':' in %q", trimmed)
	}
	if typ == "" {
		return e, false, lineErr(n, "missing process type before ':'")
	}
	if err := checkType(typ); err != nil {
		return e, false, lineErr(n, "%v", err)
	}
	cmd = strings.TrimSpace(cmd)
	if cmd == "" {
		return e, false, lineErr(n, "empty command for process type %q", typ)
	}
	for _, r := range cmd {
		// A stray control character (a lone '\r' from mixed line ends, an
		// escape sequence) is almost surely a mistake, and would be invisible
		// in `hctl ps` and the logs.
		if r != '\t' && (r < 0x20 || r == 0x7f) {
			return e, false, lineErr(n, "command for process type %q contains control character %U", typ, r)
		}
	}
	return Entry{Type: typ, Command: cmd, Line: n}, true, nil
}

// checkType validates a process type name: [A-Za-z0-9_-]{1,30}.
func checkType(typ string) error {
	for i := 0; i < len(typ); i++ {
		c := typ[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return fmt.Errorf("invalid process type %q: use only letters, digits, '_' and '-'", typ)
		}
	}
	if len(typ) > MaxTypeLength {
		return fmt.Errorf("process type %q is longer than %d characters", typ, MaxTypeLength)
	}
	return nil
}

func lineErr(n int, format string, args ...any) error {
	return fmt.Errorf("Procfile line %d: %s", n, fmt.Sprintf(format, args...))
}

// ParseFile parses the Procfile at path. A missing file gives an error that
// matches fs.ErrNotExist.
func ParseFile(path string) (*Procfile, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("reading Procfile: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("reading Procfile: %w", err)
	}
	// A directory or a FIFO named Procfile would give a confusing read error
	// or block forever.
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("Procfile %s is not a regular file", path)
	}
	return Parse(f)
}

// Entries returns all entries, release included, in file order.
func (p *Procfile) Entries() []Entry {
	return append([]Entry(nil), p.entries...)
}

// Types returns the process types in file order, without the release phase,
// which is not a process that keeps running.
func (p *Procfile) Types() []string {
	var types []string
	for _, e := range p.entries {
		if e.Type != ReleaseType {
			types = append(types, e.Type)
		}
	}
	return types
}

// Command returns the command of process type typ.
func (p *Procfile) Command(typ string) (string, bool) {
	for _, e := range p.entries {
		if e.Type == typ {
			return e.Command, true
		}
	}
	return "", false
}

// Release returns the release-phase command, if the Procfile has one.
func (p *Procfile) Release() (string, bool) {
	return p.Command(ReleaseType)
}

// Map returns every type's command, the release phase included.
func (p *Procfile) Map() map[string]string {
	m := make(map[string]string, len(p.entries))
	for _, e := range p.entries {
		m[e.Type] = e.Command
	}
	return m
}
