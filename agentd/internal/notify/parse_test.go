package notify

import (
	"errors"
	"math"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/google/go-cmp/cmp"
)

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   string
		want Message
		err  error
	}{
		{name: "empty", in: "", want: Message{Fields: map[string]string{}}},
		{
			name: "ready with status",
			in:   "READY=1\nSTATUS=booted\n",
			want: Message{Ready: true, Status: "booted", Fields: map[string]string{"READY": "1", "STATUS": "booted"}},
		},
		{
			name: "all known keys",
			in:   "STOPPING=1\nRELOADING=1\nWATCHDOG=1\nBARRIER=1\nEXTEND_TIMEOUT_USEC=2500000\nMAINPID=4242\nERRNO=13",
			want: Message{
				Stopping: true, Reloading: true, Watchdog: true, Barrier: true,
				ExtendTimeout: 2500 * time.Millisecond, MainPID: 4242, Errno: 13,
				Fields: map[string]string{
					"STOPPING": "1", "RELOADING": "1", "WATCHDOG": "1", "BARRIER": "1",
					"EXTEND_TIMEOUT_USEC": "2500000", "MAINPID": "4242", "ERRNO": "13",
				},
			},
		},
		{
			name: "lines without = and empty keys are ignored",
			in:   "hello\n\n=nokey\nREADY=1",
			want: Message{Ready: true, Fields: map[string]string{"READY": "1"}},
		},
		{
			name: "unknown keys kept raw, value may contain =",
			in:   "X_APP=a=b\nFDNAME=web",
			want: Message{Fields: map[string]string{"X_APP": "a=b", "FDNAME": "web"}},
		},
		{
			name: "flag values other than 1 are not the flag",
			in:   "READY=0\nSTOPPING=yes\nWATCHDOG=no",
			want: Message{Fields: map[string]string{"READY": "0", "STOPPING": "yes", "WATCHDOG": "no"}},
		},
		{
			name: "WATCHDOG=trigger is the process saying it is broken",
			in:   "WATCHDOG=trigger",
			want: Message{Fields: map[string]string{"WATCHDOG": "trigger"}, WatchdogTrigger: true},
		},
		{
			// systemd: strv_contains for flags, first match for values.
			name: "flag on any line, first value wins",
			in:   "READY=0\nREADY=1\nSTATUS=first\nSTATUS=second",
			want: Message{Ready: true, Status: "first", Fields: map[string]string{"READY": "0", "STATUS": "first"}},
		},
		{
			name: "empty status",
			in:   "STATUS=",
			want: Message{Fields: map[string]string{"STATUS": ""}},
		},
		{
			name: "status not utf-8 is ignored but kept raw",
			in:   "STATUS=\xff\nREADY=1",
			want: Message{Ready: true, Fields: map[string]string{"STATUS": "\xff", "READY": "1"}},
		},
		{
			name: "bad numbers are ignored, the rest stands",
			in:   "MAINPID=0\nERRNO=-5\nEXTEND_TIMEOUT_USEC=-1\nREADY=1",
			want: Message{Ready: true, Fields: map[string]string{"MAINPID": "0", "ERRNO": "-5", "EXTEND_TIMEOUT_USEC": "-1", "READY": "1"}},
		},
		{
			name: "MAINPID beyond pid_t",
			in:   "MAINPID=4294967296",
			want: Message{Fields: map[string]string{"MAINPID": "4294967296"}},
		},
		{
			name: "EXTEND_TIMEOUT_USEC saturates",
			in:   "EXTEND_TIMEOUT_USEC=18446744073709551615",
			want: Message{ExtendTimeout: math.MaxInt64, Fields: map[string]string{"EXTEND_TIMEOUT_USEC": "18446744073709551615"}},
		},
		{name: "NUL", in: "READY=1\x00", err: ErrNUL},
		{name: "too large", in: "X=" + strings.Repeat("a", MaxMessageSize-1), err: ErrTooLarge},
		{
			name: "exactly max size",
			in:   "X=" + strings.Repeat("a", MaxMessageSize-2),
			want: Message{Fields: map[string]string{"X": strings.Repeat("a", MaxMessageSize-2)}},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Parse([]byte(tc.in))
			if !errors.Is(err, tc.err) {
				t.Fatalf("Parse error = %v, want %v", err, tc.err)
			}
			if tc.err != nil {
				return
			}
			if d := cmp.Diff(tc.want, got); d != "" {
				t.Errorf("Parse(%q) mismatch (-want +got):\n%s", tc.in, d)
			}
		})
	}
}

func FuzzParse(f *testing.F) {
	// More seeds live in testdata/fuzz/FuzzParse.
	f.Add([]byte("READY=1"))
	f.Add([]byte("STATUS=x\nMAINPID=1\nERRNO=2\nEXTEND_TIMEOUT_USEC=3"))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := Parse(b)
		if err != nil {
			if len(b) <= MaxMessageSize && !strings.Contains(string(b), "\x00") {
				t.Fatalf("unexpected error %v", err)
			}
			return
		}
		if len(b) > MaxMessageSize {
			t.Fatalf("accepted %d bytes", len(b))
		}
		lines := strings.Split(string(b), "\n")
		has := func(l string) bool {
			for _, x := range lines {
				if x == l {
					return true
				}
			}
			return false
		}
		checks := []struct {
			got  bool
			line string
		}{
			{m.Ready, "READY=1"}, {m.Stopping, "STOPPING=1"}, {m.Reloading, "RELOADING=1"},
			{m.Watchdog, "WATCHDOG=1"}, {m.Barrier, "BARRIER=1"},
		}
		for _, c := range checks {
			if c.got != has(c.line) {
				t.Fatalf("flag for %q = %v, input %q", c.line, c.got, b)
			}
		}
		for k, v := range m.Fields {
			if k == "" || strings.ContainsAny(k, "=\n") || strings.Contains(v, "\n") {
				t.Fatalf("bad field %q=%q", k, v)
			}
			if !has(k + "=" + v) {
				t.Fatalf("field %q=%q not a line of the input", k, v)
			}
		}
		if m.Status != "" && (m.Status != m.Fields["STATUS"] || !utf8.ValidString(m.Status)) {
			t.Fatalf("status %q", m.Status)
		}
		if m.ExtendTimeout < 0 || m.MainPID < 0 || m.Errno < 0 || m.SenderPID != 0 {
			t.Fatalf("negative or spurious values: %+v", m)
		}
		m2, _ := Parse(b)
		if d := cmp.Diff(m, m2); d != "" {
			t.Fatalf("not deterministic: %s", d)
		}
	})
}
