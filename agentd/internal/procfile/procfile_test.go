package procfile

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParse(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    []Entry
		types   []string
		release string
	}{
		{
			name:  "single",
			in:    "web: bundle exec puma -C config/puma.rb\n",
			want:  []Entry{{"web", "bundle exec puma -C config/puma.rb", 1}},
			types: []string{"web"},
		},
		{
			name: "order, comments, blanks, release",
			in: "# the app\n\nrelease: ./migrate\n  # indented comment\nweb: ./server --port $PORT\n\n" +
				"worker: ./work # not a comment: part of the command\nclock_2-x: ./clock",
			want: []Entry{
				{"release", "./migrate", 3},
				{"web", "./server --port $PORT", 5},
				{"worker", "./work # not a comment: part of the command", 7},
				{"clock_2-x", "./clock", 8},
			},
			types:   []string{"web", "worker", "clock_2-x"},
			release: "./migrate",
		},
		{
			name:  "CRLF and surrounding space",
			in:    "web:   ./server  \r\n\r\n  worker:\t./work\t\r\n",
			want:  []Entry{{"web", "./server", 1}, {"worker", "./work", 3}},
			types: []string{"web", "worker"},
		},
		{
			name:  "colons in the command",
			in:    "web: gunicorn -b 0.0.0.0:$PORT app:wsgi\n",
			want:  []Entry{{"web", "gunicorn -b 0.0.0.0:$PORT app:wsgi", 1}},
			types: []string{"web"},
		},
		{
			name:  "no space after colon, upper case type",
			in:    "Web:./server",
			want:  []Entry{{"Web", "./server", 1}},
			types: []string{"Web"},
		},
		{
			name:  "byte order mark",
			in:    "\ufeffweb: ./server\n",
			want:  []Entry{{"web", "./server", 1}},
			types: []string{"web"},
		},
		{
			name:  "30 character type",
			in:    strings.Repeat("a", 30) + ": x",
			want:  []Entry{{strings.Repeat("a", 30), "x", 1}},
			types: []string{strings.Repeat("a", 30)},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := Parse(strings.NewReader(tt.in))
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if diff := cmp.Diff(tt.want, p.Entries()); diff != "" {
				t.Errorf("entries (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.types, p.Types()); diff != "" {
				t.Errorf("Types (-want +got):\n%s", diff)
			}
			rel, ok := p.Release()
			if rel != tt.release || ok != (tt.release != "") {
				t.Errorf("Release() = %q, %v; want %q", rel, ok, tt.release)
			}
			m := p.Map()
			if len(m) != len(tt.want) {
				t.Errorf("Map() has %d entries, want %d", len(m), len(tt.want))
			}
			for _, e := range tt.want {
				if m[e.Type] != e.Command {
					t.Errorf("Map()[%q] = %q, want %q", e.Type, m[e.Type], e.Command)
				}
				if c, ok := p.Command(e.Type); !ok || c != e.Command {
					t.Errorf("Command(%q) = %q, %v", e.Type, c, ok)
				}
			}
			if c, ok := p.Command("nope"); ok || c != "" {
				t.Errorf("Command(nope) = %q, %v", c, ok)
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{"empty", "", "Procfile defines no process types"},
		{"only comments", "# nothing\n\n", "Procfile defines no process types"},
		{"only release", "release: ./migrate\n", "Procfile defines no process types (only a release command)"},
		{"no colon", "web: ok\nworker ./work\n", `Procfile line 2: expected "TYPE: COMMAND", found no ':' in "worker ./work"`},
		{"no type", "web: ok\n: ./x\n", "Procfile line 2: missing process type before ':'"},
		{"bad type", "web: ok\n\nweb server: ./x\n", `Procfile line 3: invalid process type "web server": use only letters, digits, '_' and '-'`},
		{"space before colon", "web : ./x\n", `Procfile line 1: invalid process type "web "`},
		{"dotted type", "web.1: ./x\n", `Procfile line 1: invalid process type "web.1"`},
		{"long type", strings.Repeat("a", 31) + ": x\n", "Procfile line 1: process type \"" + strings.Repeat("a", 31) + "\" is longer than 30 characters"},
		{"duplicate", "web: a\nworker: b\nweb: c\n", `Procfile line 3: process type "web" is already defined on line 1`},
		{"duplicate release", "web: a\nrelease: b\nrelease: c\n", `Procfile line 3: process type "release" is already defined on line 2`},
		{"empty command", "web: a\nworker:\n", `Procfile line 2: empty command for process type "worker"`},
		{"blank command", "web:   \t \r\n", `Procfile line 1: empty command for process type "web"`},
		{"NUL", "web: a\x00b\n", "Procfile line 1: contains a NUL byte"},
		{"stray CR", "web: a\rb\n", `Procfile line 1: command for process type "web" contains control character U+000D`},
		{"escape", "web: a\x1b[0mb\n", "contains control character U+001B"},
		{"bad UTF-8", "web: a\xffb\n", "Procfile line 1: is not valid UTF-8"},
		{"long line", "web: " + strings.Repeat("x", MaxLineLength) + "\n", "Procfile line 1: line is longer than 8192 bytes"},
		{"too large", strings.Repeat("# padding padding padding\n", MaxSize/10), "Procfile is larger than 64 KiB"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := Parse(strings.NewReader(tt.in))
			if err == nil {
				t.Fatalf("Parse succeeded with %v, want error %q", p.Entries(), tt.want)
			}
			if !strings.HasPrefix(err.Error(), tt.want) && !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error = %q, want it to contain %q", err, tt.want)
			}
		})
	}
}

// The size cap is on the file, so a Procfile of exactly MaxSize bytes is
// still fine.
func TestParseAtMaxSize(t *testing.T) {
	head := "web: ./server\n"
	// Pad with comment lines, each shorter than MaxLineLength.
	var b strings.Builder
	b.WriteString(head)
	for b.Len() < MaxSize-100 {
		b.WriteString(strings.Repeat("#", 99) + "\n")
	}
	b.WriteString(strings.Repeat("#", MaxSize-b.Len()-1) + "\n")
	if b.Len() != MaxSize {
		t.Fatalf("test input is %d bytes", b.Len())
	}
	if _, err := Parse(strings.NewReader(b.String())); err != nil {
		t.Fatalf("Parse of a %d byte Procfile: %v", MaxSize, err)
	}
}

func TestParseFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "Procfile")
	if err := os.WriteFile(path, []byte("web: ./server\nrelease: ./migrate\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	p, err := ParseFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"web"}, p.Types()); diff != "" {
		t.Errorf("Types (-want +got):\n%s", diff)
	}

	_, err = ParseFile(filepath.Join(dir, "missing"))
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("ParseFile(missing) = %v, want fs.ErrNotExist", err)
	}
	_, err = ParseFile(dir)
	if err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Errorf("ParseFile(dir) = %v, want a not-a-regular-file error", err)
	}
}

// render writes entries back in the canonical "TYPE: COMMAND" form.
func render(entries []Entry) string {
	var b strings.Builder
	for _, e := range entries {
		b.WriteString(e.Type + ": " + e.Command + "\n")
	}
	return b.String()
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"web: ./server\n",
		"release: ./migrate\nweb: ./server --port $PORT\nworker: ./work\n",
		"# comment\r\n\r\nweb:  a:b # c \r\n",
		"web: a\nweb: b\n",
		"release: x\n",
		"\ufeffweb: x",
		"web:\n",
		"w\x00: x",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := Parse(strings.NewReader(string(data)))
		if err != nil {
			if !strings.HasPrefix(err.Error(), "Procfile") && !strings.HasPrefix(err.Error(), "reading Procfile") {
				t.Errorf("error %q does not start with \"Procfile\"", err)
			}
			return
		}
		if len(p.Types()) == 0 {
			t.Fatalf("Parse succeeded without process types: %v", p.Entries())
		}
		again, err := Parse(strings.NewReader(render(p.Entries())))
		if err != nil {
			t.Fatalf("re-parsing %q: %v", render(p.Entries()), err)
		}
		strip := func(es []Entry) []Entry {
			out := make([]Entry, len(es))
			for i, e := range es {
				out[i] = Entry{Type: e.Type, Command: e.Command}
			}
			return out
		}
		if diff := cmp.Diff(strip(p.Entries()), strip(again.Entries())); diff != "" {
			t.Fatalf("round trip changed the entries (-first +second):\n%s", diff)
		}
	})
}
