package grammar

import (
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// The fuzz targets check each parser against a plain statement of its rule
// (for app names and config keys, the regular expressions agentd has
// enforced so far), and that what it accepts renders back to the input.
// Seeds are in testdata/fuzz.

// checkErr fails unless err is nil or an *Error matching sentinel.
func checkErr(t *testing.T, err, sentinel error) {
	t.Helper()
	if err == nil {
		return
	}
	if _, ok := errors.AsType[*Error](err); !ok || !errors.Is(err, sentinel) {
		t.Fatalf("error %v (%T) is not a *grammar.Error for %v", err, err, sentinel)
	}
}

func FuzzCheckAppName(f *testing.F) {
	re := regexp.MustCompile(`^[a-z][a-z0-9-]{0,29}$`)
	f.Fuzz(func(t *testing.T, s string) {
		err := CheckAppName(s)
		checkErr(t, err, ErrBadAppName)
		if (err == nil) != re.MatchString(s) {
			t.Fatalf("CheckAppName(%q) = %v, but the rule %s says %v", s, err, re, re.MatchString(s))
		}
	})
}

func FuzzCheckConfigKey(f *testing.F) {
	re := regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,127}$`)
	f.Fuzz(func(t *testing.T, k string) {
		err := CheckConfigKey(k)
		checkErr(t, err, ErrBadConfigKey)
		if (err == nil) != re.MatchString(k) {
			t.Fatalf("CheckConfigKey(%q) = %v, but the rule %s says %v", k, err, re, re.MatchString(k))
		}
		serr := CheckSettableConfigKey(k)
		if want := err == nil && !Reserved(k); (serr == nil) != want {
			t.Fatalf("CheckSettableConfigKey(%q) = %v", k, serr)
		}
	})
}

func FuzzParseProcessName(f *testing.F) {
	re := regexp.MustCompile(`^[A-Za-z0-9_-]{1,30}(\.[1-9][0-9]{0,5})?$`)
	f.Fuzz(func(t *testing.T, s string) {
		typ, n, err := ParseProcessName(s)
		checkErr(t, err, ErrBadProcessName)
		if (err == nil) != re.MatchString(s) {
			t.Fatalf("ParseProcessName(%q) = %v, but the rule %s says %v", s, err, re, re.MatchString(s))
		}
		if err != nil {
			return
		}
		back := typ
		if n > 0 {
			back = fmt.Sprintf("%s.%d", typ, n)
		}
		if back != s || CheckProcessType(typ) != nil {
			t.Fatalf("ParseProcessName(%q) = %q, %d: renders as %q", s, typ, n, back)
		}
	})
}

// agentdParseVersion is agentd's parseVersion as it was before grammar,
// verbatim but for its message: the rule ParseRelease must keep.
func agentdParseVersion(s string) (int, error) {
	var v int
	if _, err := fmt.Sscanf(strings.TrimPrefix(s, "v"), "%d", &v); err != nil || v <= 0 || fmt.Sprintf("v%d", v) != "v"+strings.TrimPrefix(s, "v") {
		return 0, errors.New("bad release")
	}
	return v, nil
}

func FuzzParseRelease(f *testing.F) {
	f.Fuzz(func(t *testing.T, s string) {
		n, err := ParseRelease(s)
		checkErr(t, err, ErrBadRelease)
		// Up to nine digits (ParseRelease's cap; no app gets near) the two
		// agree.
		if len(strings.TrimPrefix(s, "v")) <= 9 {
			m, aerr := agentdParseVersion(s)
			if (err == nil) != (aerr == nil) || n != m {
				t.Fatalf("ParseRelease(%q) = %d, %v; agentd's parseVersion: %d, %v", s, n, err, m, aerr)
			}
		}
		if err != nil {
			return
		}
		if n < 1 || ReleaseName(n) != "v"+strings.TrimPrefix(s, "v") {
			t.Fatalf("ParseRelease(%q) = %d, named %s", s, n, ReleaseName(n))
		}
	})
}

func FuzzParseFormation(f *testing.F) {
	f.Fuzz(func(t *testing.T, s string) {
		typ, n, err := ParseFormation(s)
		checkErr(t, err, ErrBadFormation)
		if err != nil {
			return
		}
		count := strings.TrimPrefix(s, typ+"=")
		if m, aerr := strconv.Atoi(count); aerr != nil || m != n || n < 0 || n > MaxScale ||
			CheckProcessType(typ) != nil || strings.ContainsAny(count, "+-") {
			t.Fatalf("ParseFormation(%q) = %q, %d", s, typ, n)
		}
	})
}

func FuzzParseReadiness(f *testing.F) {
	f.Fuzz(func(t *testing.T, s string) {
		r, err := ParseReadiness(s)
		checkErr(t, err, ErrBadReadiness)
		if err != nil {
			return
		}
		// What it accepts renders to a spec that parses to the same kind.
		again, err := ParseReadiness(r.String())
		if err != nil || again != r {
			t.Fatalf("ParseReadiness(%q) = %+v renders as %q, which parses as %+v, %v", s, r, r.String(), again, err)
		}
	})
}

func FuzzParseDuration(f *testing.F) {
	f.Fuzz(func(t *testing.T, s string) {
		d, err := ParseDuration(s)
		checkErr(t, err, ErrBadDuration)
		if err == nil && d < 0 {
			t.Fatalf("ParseDuration(%q) = %v", s, d)
		}
	})
}
