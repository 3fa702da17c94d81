package grammar

import (
	"errors"
	"fmt"
)

// Field names what was checked, in words fit for a message.
type Field string

const (
	FieldAppName     Field = "app name"
	FieldProcessType Field = "process type"
	FieldProcessName Field = "process name"
	FieldConfigKey   Field = "config key"
	FieldConfigValue Field = "config value"
	FieldRelease     Field = "release"
	FieldFormation   Field = "formation"
	FieldReadiness   Field = "readiness"
	FieldDuration    Field = "duration"
)

// The sentinels, one per rule; errors.Is(err, ErrBadAppName) tells a
// caller which rule input broke without reading the message.
var (
	ErrBadAppName        = errors.New("bad app name")
	ErrBadProcessType    = errors.New("bad process type")
	ErrBadProcessName    = errors.New("bad process name")
	ErrBadConfigKey      = errors.New("bad config key")
	ErrReservedConfigKey = errors.New("config key reserved by agentd")
	ErrBadConfigValue    = errors.New("bad config value")
	ErrBadRelease        = errors.New("bad release")
	ErrBadFormation      = errors.New("bad formation")
	ErrBadReadiness      = errors.New("bad readiness kind")
	ErrBadDuration       = errors.New("bad duration")
)

// Error is input that breaks a rule of the grammar.
type Error struct {
	Field Field
	// Input is the text as given; for FieldConfigValue it is the key (a
	// value may be 64 KiB of anything, and secret).
	Input string
	// Reason says what is wrong and what is wanted, e.g. "use a lowercase
	// letter, then up to 29 lowercase letters, digits or '-'".
	Reason string
	// Err is the rule's sentinel, what errors.Is matches.
	Err error
}

// maxQuoted caps how much of a bad input a message repeats: fuzzed or
// mistaken input can be any length.
const maxQuoted = 80

func (e *Error) Error() string {
	in := e.Input
	if len(in) > maxQuoted {
		in = in[:maxQuoted] + "…"
	}
	if e.Field == FieldConfigValue {
		return fmt.Sprintf("bad value for config key %q: %s", in, e.Reason)
	}
	return fmt.Sprintf("bad %s %q: %s", e.Field, in, e.Reason)
}

func (e *Error) Unwrap() error { return e.Err }

func newError(f Field, input string, sentinel error, reason string) *Error {
	return &Error{Field: f, Input: input, Reason: reason, Err: sentinel}
}

// Reason returns the Reason of the *Error in err's chain, or err's whole
// message when there is none: for callers that frame the reason in their
// own words.
func Reason(err error) string {
	if e, ok := errors.AsType[*Error](err); ok {
		return e.Reason
	}
	return err.Error()
}
