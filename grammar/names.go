package grammar

import (
	"strconv"
	"strings"
)

const (
	// MaxAppNameLength: app names appear in paths, unit names
	// (agentd-APP-vN.scope), journal fields and metric labels.
	MaxAppNameLength = 30
	// MaxProcessTypeLength: types appear in process names (web.1), journal
	// fields and metric labels; Procfile types obey the same cap.
	MaxProcessTypeLength = 30
	// MaxScale is the most processes of one type an app may run.
	MaxScale = 100
	// maxIndexDigits bounds N in TYPE.N; processes are numbered from 1 and
	// renumbered to at most MaxScale, so six digits is generous.
	maxIndexDigits = 6
)

func isLower(c byte) bool { return c >= 'a' && c <= 'z' }
func isDigit(c byte) bool { return c >= '0' && c <= '9' }
func isLetter(c byte) bool {
	return isLower(c) || c >= 'A' && c <= 'Z'
}

// CheckAppName checks an app name: a lowercase letter, then up to 29
// lowercase letters, digits or '-' (^[a-z][a-z0-9-]{0,29}$). It is also
// safe as a path component: no '/', no '.', never "..".
func CheckAppName(s string) error {
	ok := len(s) >= 1 && len(s) <= MaxAppNameLength && isLower(s[0])
	for i := 1; ok && i < len(s); i++ {
		ok = isLower(s[i]) || isDigit(s[i]) || s[i] == '-'
	}
	if !ok {
		return newError(FieldAppName, s, ErrBadAppName,
			"use a lowercase letter, then up to 29 lowercase letters, digits or '-'")
	}
	return nil
}

// CheckProcessType checks a process type name (web, worker, clock): 1 to
// 30 letters, digits, '_' or '-' (^[A-Za-z0-9_-]{1,30}$), as in a Procfile.
func CheckProcessType(s string) error {
	ok := len(s) >= 1 && len(s) <= MaxProcessTypeLength
	for i := 0; ok && i < len(s); i++ {
		ok = isLetter(s[i]) || isDigit(s[i]) || s[i] == '_' || s[i] == '-'
	}
	if !ok {
		return newError(FieldProcessType, s, ErrBadProcessType,
			"use 1 to 30 letters, digits, '_' or '-'")
	}
	return nil
}

// ParseProcessName parses a process name, web.1, or a bare process type,
// web, that stands for all its processes. index is N of TYPE.N (1 or
// more, no leading zero), or 0 for a bare type.
func ParseProcessName(s string) (typ string, index int, err error) {
	bad := func() (string, int, error) {
		return "", 0, newError(FieldProcessName, s, ErrBadProcessName,
			"want a process type such as web, or one process such as web.1")
	}
	typ, num, dotted := strings.Cut(s, ".")
	if CheckProcessType(typ) != nil {
		return bad()
	}
	if !dotted {
		return typ, 0, nil
	}
	if len(num) == 0 || len(num) > maxIndexDigits || num[0] == '0' {
		return bad()
	}
	for i := 0; i < len(num); i++ {
		if !isDigit(num[i]) {
			return bad()
		}
	}
	n, _ := strconv.Atoi(num) // at most six digits: cannot fail
	return typ, n, nil
}

// ParseRelease parses a release name, "v3" or "3", into its number (1 or
// more, no leading zero, no sign).
func ParseRelease(s string) (int, error) {
	num := strings.TrimPrefix(s, "v")
	ok := len(num) >= 1 && len(num) <= 9 && num[0] != '0'
	for i := 0; ok && i < len(num); i++ {
		ok = isDigit(num[i])
	}
	if !ok {
		return 0, newError(FieldRelease, s, ErrBadRelease, "want a version such as v3")
	}
	n, _ := strconv.Atoi(num) // at most nine digits: cannot fail
	return n, nil
}

// ReleaseName is the name of release n: v3.
func ReleaseName(n int) string { return "v" + strconv.Itoa(n) }

// ParseFormation parses one formation entry, TYPE=N, with N from 0 to
// MaxScale. A count may have leading zeros (web=02 is 2), never a sign.
func ParseFormation(s string) (typ string, n int, err error) {
	typ, count, ok := strings.Cut(s, "=")
	if !ok || CheckProcessType(typ) != nil {
		return "", 0, newError(FieldFormation, s, ErrBadFormation, "want TYPE=N, such as web=2")
	}
	ok = len(count) >= 1 && len(count) <= 9
	for i := 0; ok && i < len(count); i++ {
		ok = isDigit(count[i])
	}
	if ok {
		n, _ = strconv.Atoi(count) // at most nine digits: cannot fail
	}
	if !ok || n > MaxScale {
		return "", 0, newError(FieldFormation, s, ErrBadFormation,
			"the count must be a whole number from 0 to "+strconv.Itoa(MaxScale))
	}
	return typ, n, nil
}
