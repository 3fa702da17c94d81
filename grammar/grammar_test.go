package grammar

import (
	"errors"
	"strings"
	"testing"
	"time"
)

// wantErr checks that err is an *Error of field f matching sentinel, and
// that its message is neutral: it names no hctl flag, nor hctl.
func wantErr(t *testing.T, call string, err, sentinel error, f Field) {
	t.Helper()
	if err == nil {
		t.Errorf("%s succeeded, want %v", call, sentinel)
		return
	}
	if !errors.Is(err, sentinel) {
		t.Errorf("%s: %v is not %v", call, err, sentinel)
	}
	e, ok := errors.AsType[*Error](err)
	if !ok {
		t.Errorf("%s: %T is not a *grammar.Error", call, err)
		return
	}
	if e.Field != f || e.Reason == "" {
		t.Errorf("%s: field %q reason %q, want field %q and a reason", call, e.Field, e.Reason, f)
	}
	if msg := err.Error(); strings.Contains(msg, "--") || strings.Contains(msg, "hctl") {
		t.Errorf("%s: message %q names a flag or hctl", call, msg)
	}
}

func TestAppName(t *testing.T) {
	for _, s := range []string{"a", "web", "my-app-2", "a" + strings.Repeat("b", 29), "x-"} {
		if err := CheckAppName(s); err != nil {
			t.Errorf("CheckAppName(%q): %v", s, err)
		}
	}
	for _, s := range []string{"", "A", "Web", "2web", "-web", "my_app", "my.app", "..", "a/b", "a b",
		"a" + strings.Repeat("b", 30), "é", "web\n"} {
		wantErr(t, "CheckAppName("+s+")", CheckAppName(s), ErrBadAppName, FieldAppName)
	}
}

func TestProcessTypeAndName(t *testing.T) {
	for _, s := range []string{"web", "Worker_2", "a-b", strings.Repeat("w", 30)} {
		if err := CheckProcessType(s); err != nil {
			t.Errorf("CheckProcessType(%q): %v", s, err)
		}
	}
	for _, s := range []string{"", "web.1", "a b", "wéb", strings.Repeat("w", 31), "a/b", "a=b"} {
		wantErr(t, "CheckProcessType("+s+")", CheckProcessType(s), ErrBadProcessType, FieldProcessType)
	}
	good := map[string]struct {
		typ string
		n   int
	}{"web": {"web", 0}, "web.1": {"web", 1}, "worker.100": {"worker", 100}, "w.999999": {"w", 999999}}
	for s, want := range good {
		typ, n, err := ParseProcessName(s)
		if err != nil || typ != want.typ || n != want.n {
			t.Errorf("ParseProcessName(%q) = %q, %d, %v; want %q, %d", s, typ, n, err, want.typ, want.n)
		}
	}
	for _, s := range []string{"", ".1", "web.", "web.0", "web.01", "web.1.2", "web.-1", "web.+1", "web.x",
		"web.1000000", "a b.1"} {
		_, _, err := ParseProcessName(s)
		wantErr(t, "ParseProcessName("+s+")", err, ErrBadProcessName, FieldProcessName)
	}
}

func TestRelease(t *testing.T) {
	good := map[string]int{"v1": 1, "1": 1, "v42": 42, "123456789": 123456789}
	for s, want := range good {
		n, err := ParseRelease(s)
		if err != nil || n != want {
			t.Errorf("ParseRelease(%q) = %d, %v; want %d", s, n, err, want)
		}
		if ReleaseName(n) != "v"+strings.TrimPrefix(s, "v") {
			t.Errorf("ReleaseName(%d) = %q", n, ReleaseName(n))
		}
	}
	for _, s := range []string{"", "v", "v0", "0", "v03", "vv3", "V3", "v-1", "+3", "v3.1", "x3", "latest", " 3", "1234567890"} {
		_, err := ParseRelease(s)
		wantErr(t, "ParseRelease("+s+")", err, ErrBadRelease, FieldRelease)
	}
}

func TestFormation(t *testing.T) {
	good := map[string]int{"web=0": 0, "web=2": 2, "worker=100": 100, "web=02": 2}
	for s, want := range good {
		typ, n, err := ParseFormation(s)
		if err != nil || n != want || typ != strings.Split(s, "=")[0] {
			t.Errorf("ParseFormation(%q) = %q, %d, %v; want %d", s, typ, n, err, want)
		}
	}
	for _, s := range []string{"", "web", "web=", "=2", "web=-1", "web=+1", "web=two", "web=101", "web=1=2",
		"web=9999999999", "w b=1", "web.1=2"} {
		_, _, err := ParseFormation(s)
		wantErr(t, "ParseFormation("+s+")", err, ErrBadFormation, FieldFormation)
	}
}

func TestConfig(t *testing.T) {
	for _, k := range []string{"A", "_", "DATABASE_URL", "a1", strings.Repeat("K", 128), "PORTS", "MY_AGENTD_X"} {
		if err := CheckSettableConfigKey(k); err != nil {
			t.Errorf("CheckSettableConfigKey(%q): %v", k, err)
		}
	}
	for _, k := range []string{"", "1BAD", "A-B", "A=B", "A B", "É", strings.Repeat("K", 129)} {
		wantErr(t, "CheckConfigKey("+k+")", CheckConfigKey(k), ErrBadConfigKey, FieldConfigKey)
		wantErr(t, "CheckSettableConfigKey("+k+")", CheckSettableConfigKey(k), ErrBadConfigKey, FieldConfigKey)
	}
	// Every variable agentd sets in a process, and the namespaces it owns.
	for _, k := range []string{"PORT", "NOTIFY_SOCKET", "AGENTD_APP", "AGENTD_RELEASE", "AGENTD_PROCESS",
		"LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES", "AGENTD_ANYTHING"} {
		if err := CheckConfigKey(k); err != nil {
			t.Errorf("CheckConfigKey(%q): %v (a reserved key can still be unset)", k, err)
		}
		if !Reserved(k) {
			t.Errorf("Reserved(%q) = false", k)
		}
		err := CheckSettableConfigKey(k)
		wantErr(t, "CheckSettableConfigKey("+k+")", err, ErrReservedConfigKey, FieldConfigKey)
		if errors.Is(err, ErrBadConfigKey) {
			t.Errorf("CheckSettableConfigKey(%q) is ErrBadConfigKey too", k)
		}
	}
	for _, v := range []string{"", "x", "a=b", "line\nbreak", strings.Repeat("v", MaxConfigValueLength)} {
		if err := CheckConfigValue("K", v); err != nil {
			t.Errorf("CheckConfigValue(%.20q): %v", v, err)
		}
	}
	for _, v := range []string{"nul\x00byte", strings.Repeat("v", MaxConfigValueLength+1)} {
		err := CheckConfigValue("SECRET", v)
		wantErr(t, "CheckConfigValue", err, ErrBadConfigValue, FieldConfigValue)
		if err != nil && (strings.Contains(err.Error(), "nul") || !strings.Contains(err.Error(), "SECRET")) {
			t.Errorf("message %q: should name the key, never quote the value", err)
		}
	}
}

func TestReadinessAndDuration(t *testing.T) {
	good := map[string]Readiness{
		"notify":         {Kind: KindNotify},
		"tcp":            {Kind: KindTCP},
		"http:/healthz":  {Kind: KindHTTP, Path: "/healthz"},
		"http:/":         {Kind: KindHTTP, Path: "/"},
		"exec:test -f x": {Kind: KindExec, Cmd: "test -f x"},
		"exec:a:b":       {Kind: KindExec, Cmd: "a:b"},
		"uptime":         {Kind: KindUptime, Uptime: DefaultUptime},
		"uptime:0s":      {Kind: KindUptime},
		"uptime:1m30s":   {Kind: KindUptime, Uptime: 90 * time.Second},
	}
	for s, want := range good {
		r, err := ParseReadiness(s)
		if err != nil || r != want {
			t.Errorf("ParseReadiness(%q) = %+v, %v; want %+v", s, r, err, want)
		}
	}
	for _, s := range []string{"", "magic", "notify:x", "tcp:80", "http", "http:", "http:healthz", "http:/a b",
		"http:/a\r\nHost: x", "exec:", "exec:  ", "uptime:", "uptime:soon", "uptime:-1s", "NOTIFY", " notify"} {
		_, err := ParseReadiness(s)
		wantErr(t, "ParseReadiness("+s+")", err, ErrBadReadiness, FieldReadiness)
	}
	for _, s := range []string{"", "5", "-1s", "soon", "1x"} {
		_, err := ParseDuration(s)
		wantErr(t, "ParseDuration("+s+")", err, ErrBadDuration, FieldDuration)
	}
	if d, err := ParseDuration("1m30s"); err != nil || d != 90*time.Second {
		t.Errorf("ParseDuration(1m30s) = %v, %v", d, err)
	}
}

func TestErrorMessage(t *testing.T) {
	err := CheckAppName(strings.Repeat("X", 1000))
	if len(err.Error()) > 300 {
		t.Errorf("a long input is quoted whole: %d bytes", len(err.Error()))
	}
	if got := Reason(err); got != "use a lowercase letter, then up to 29 lowercase letters, digits or '-'" {
		t.Errorf("Reason = %q", got)
	}
	plain := errors.New("plain")
	if Reason(plain) != "plain" {
		t.Errorf("Reason of a non-grammar error = %q", Reason(plain))
	}
}
