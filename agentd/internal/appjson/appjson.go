// Package appjson reads a release's app.json: Heroku's manifest, with the
// keys Dokku added (scripts.dokku, healthchecks, cron) and one of agentd's
// own (scripts.agentd.postdrain).
//
// The Procfile stays the source of process types; app.json only says what
// a Procfile cannot. Unknown keys are ignored, as Heroku and Dokku do (an
// app.json also carries name, description, env, addons, buildpacks... for
// other tools), but a known key with a malformed value is an error naming
// that key, e.g. "app.json: cron[1].schedule: ...": a typo must fail the
// deploy's prepare phase, not silently drop a health check or a job.
package appjson

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/robfig/cron/v3"

	"github.com/agentd/agentd/grammar"
)

const (
	// FileName is where a release carries its manifest: the release root.
	FileName = "app.json"
	// MaxSize caps app.json. Real ones are a few KiB; the cap keeps a
	// hostile or mistaken artifact from being read into memory whole.
	MaxSize = 256 << 10
	// MaxCommandLength caps one script or cron command, as the Procfile caps
	// a line.
	MaxCommandLength = 8 << 10
	// MaxCronJobs and MaxChecks bound the lists: each job or check costs a
	// timer or a prober in agentd.
	MaxCronJobs = 100
	MaxChecks   = 20
	// MaxSeconds bounds every duration given in seconds (a day).
	MaxSeconds = 86400
)

// Health check types, Dokku's words.
const (
	CheckStartup  = "startup"  // gates readiness on a deploy
	CheckLiveness = "liveness" // probed while the process runs
)

// Dokku's defaults for a check's settings (docker-container-healthchecker).
const (
	DefaultAttempts = 3
	DefaultTimeout  = 5 * time.Second
	DefaultWait     = 5 * time.Second
	DefaultUptime   = 10 * time.Second
)

// ErrInvalid is wrapped by every error about a malformed app.json.
var ErrInvalid = errors.New("invalid app.json")

// Manifest is a parsed app.json. A key that is absent leaves its field zero.
type Manifest struct {
	Formation    map[string]Formation     // "formation": {"web": {"quantity": 2}}
	Scripts      Scripts                  // "scripts"
	Healthchecks map[string][]Healthcheck // "healthchecks": per process type (Dokku's format)
	Cron         []CronJob                // "cron"
}

// Formation is one process type's entry of "formation". Heroku's "size"
// (a dyno size) has no meaning on a VM and is ignored.
type Formation struct {
	Quantity int
}

// Scripts are the commands of "scripts", each run like a Procfile line
// (/bin/sh -c in the release directory, the app's environment). Empty
// means not given.
type Scripts struct {
	// Postdeploy is Heroku's scripts.postdeploy: once, after the app's
	// first successful deploy.
	Postdeploy string
	// DokkuPredeploy is Dokku's scripts.dokku.predeploy: the release phase
	// when the Procfile has no release: line.
	DokkuPredeploy string
	// DokkuPostdeploy is Dokku's scripts.dokku.postdeploy: after cutover.
	DokkuPostdeploy string
	// AgentdPostdrain is scripts.agentd.postdrain: once per release, when
	// its bake passed and no process of an older release is left.
	AgentdPostdrain string
}

// Healthcheck is one entry of a process type's list in "healthchecks", in
// Dokku's format. Durations are whole seconds in the file.
type Healthcheck struct {
	Type         string        // CheckStartup or CheckLiveness
	Name         string        // for messages; may be empty
	Path         string        // HTTP check: GET Path answers 2xx/3xx
	Command      []string      // command check: exits 0
	Listening    bool          // TCP check: a connection is accepted
	Port         int           // Dokku's container port; agentd probes its probe socket instead
	Attempts     int           // tries before the check fails
	Timeout      time.Duration // per try
	Wait         time.Duration // between tries
	InitialDelay time.Duration // before the first try
	Uptime       time.Duration // uptime check: alive that long
}

// Readiness is the check as a readiness kind of package grammar: http:PATH,
// exec:COMMAND, tcp, or uptime:DURATION. Attempts, timeout and the waits
// are the caller's to apply.
func (c Healthcheck) Readiness() grammar.Readiness {
	switch {
	case c.Path != "":
		return grammar.Readiness{Kind: grammar.KindHTTP, Path: c.Path}
	case len(c.Command) > 0:
		q := make([]string, len(c.Command))
		for i, a := range c.Command {
			q[i] = shellQuote(a)
		}
		return grammar.Readiness{Kind: grammar.KindExec, Cmd: strings.Join(q, " ")}
	case c.Listening:
		return grammar.Readiness{Kind: grammar.KindTCP}
	}
	return grammar.Readiness{Kind: grammar.KindUptime, Uptime: c.Uptime}
}

// shellQuote quotes s for /bin/sh unless it is made of safe characters.
func shellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./=:,+@%") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// CronJob is one entry of "cron", in Dokku's format.
type CronJob struct {
	Command  string // shell command line, run like a Procfile line
	Schedule string // validated with robfig/cron/v3 (v3.0.1): 5 fields, descriptors (@hourly, @every 10s), an optional "CRON_TZ=Zone " prefix
}

// Load reads RELEASE_DIR/app.json; (nil, nil) when there is none.
func Load(releaseDir string) (*Manifest, error) {
	path := filepath.Join(releaseDir, FileName)
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading app.json: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("reading app.json: %w", err)
	}
	// A directory or FIFO named app.json would give a confusing error or
	// block forever.
	if !fi.Mode().IsRegular() {
		return nil, keyErr("", "not a regular file")
	}
	data, err := io.ReadAll(io.LimitReader(f, MaxSize+1))
	if err != nil {
		return nil, fmt.Errorf("reading app.json: %w", err)
	}
	return Parse(data)
}

// Parse parses and validates an app.json. An error names the key, as in
// "app.json: cron[1].schedule: ...", and wraps ErrInvalid.
func Parse(data []byte) (*Manifest, error) {
	if len(data) > MaxSize {
		return nil, keyErr("", "larger than %d KiB", MaxSize>>10)
	}
	data = bytes.TrimPrefix(data, []byte("\xef\xbb\xbf"))
	if !utf8.Valid(data) {
		return nil, keyErr("", "not valid UTF-8")
	}
	var top map[string]json.RawMessage
	if err := strictUnmarshal(data, &top); err != nil {
		return nil, keyErr("", "%s", jsonReason(err, "an object"))
	}
	if top == nil {
		return nil, keyErr("", "want an object, not null")
	}
	m := &Manifest{}
	var err error
	if raw, ok := top["formation"]; ok {
		if m.Formation, err = parseFormation(raw); err != nil {
			return nil, err
		}
	}
	if raw, ok := top["scripts"]; ok {
		if m.Scripts, err = parseScripts(raw); err != nil {
			return nil, err
		}
	}
	if raw, ok := top["healthchecks"]; ok {
		if m.Healthchecks, err = parseHealthchecks(raw); err != nil {
			return nil, err
		}
	}
	if raw, ok := top["cron"]; ok {
		if m.Cron, err = parseCron(raw); err != nil {
			return nil, err
		}
	}
	return m, nil
}

func parseFormation(raw json.RawMessage) (map[string]Formation, error) {
	obj, err := object(raw, "formation")
	if err != nil || obj == nil {
		return nil, err
	}
	out := make(map[string]Formation, len(obj))
	for typ, v := range obj {
		key := "formation." + typ
		if err := grammar.CheckProcessType(typ); err != nil {
			return nil, keyErr(key, "%s", grammar.Reason(err))
		}
		entry, err := object(v, key)
		if err != nil {
			return nil, err
		}
		var f Formation
		if q, ok := entry["quantity"]; ok {
			n, err := integer(q, key+".quantity", 0, grammar.MaxScale)
			if err != nil {
				return nil, err
			}
			f.Quantity = n
		} else {
			// Heroku's default quantity is 1.
			f.Quantity = 1
		}
		out[typ] = f
	}
	return out, nil
}

func parseScripts(raw json.RawMessage) (Scripts, error) {
	var s Scripts
	obj, err := object(raw, "scripts")
	if err != nil || obj == nil {
		return s, err
	}
	if v, ok := obj["postdeploy"]; ok {
		if s.Postdeploy, err = script(v, "scripts.postdeploy"); err != nil {
			return s, err
		}
	}
	if v, ok := obj["dokku"]; ok {
		d, err := object(v, "scripts.dokku")
		if err != nil {
			return s, err
		}
		if v, ok := d["predeploy"]; ok {
			if s.DokkuPredeploy, err = script(v, "scripts.dokku.predeploy"); err != nil {
				return s, err
			}
		}
		if v, ok := d["postdeploy"]; ok {
			if s.DokkuPostdeploy, err = script(v, "scripts.dokku.postdeploy"); err != nil {
				return s, err
			}
		}
	}
	if v, ok := obj["agentd"]; ok {
		a, err := object(v, "scripts.agentd")
		if err != nil {
			return s, err
		}
		if v, ok := a["postdrain"]; ok {
			if s.AgentdPostdrain, err = script(v, "scripts.agentd.postdrain"); err != nil {
				return s, err
			}
		}
	}
	return s, nil
}

// script reads a script: a command string or, as Heroku also allows,
// {"command": "...", "size": "..."}.
func script(raw json.RawMessage, key string) (string, error) {
	if isNull(raw) {
		return "", nil
	}
	if len(bytes.TrimSpace(raw)) > 0 && bytes.TrimSpace(raw)[0] == '{' {
		obj, err := object(raw, key)
		if err != nil {
			return "", err
		}
		c, ok := obj["command"]
		if !ok {
			return "", keyErr(key, "want a command string or {\"command\": \"...\"}")
		}
		return command(c, key+".command")
	}
	return command(raw, key)
}

func parseHealthchecks(raw json.RawMessage) (map[string][]Healthcheck, error) {
	obj, err := object(raw, "healthchecks")
	if err != nil || obj == nil {
		return nil, err
	}
	out := make(map[string][]Healthcheck, len(obj))
	for typ, v := range obj {
		key := "healthchecks." + typ
		if err := grammar.CheckProcessType(typ); err != nil {
			return nil, keyErr(key, "%s", grammar.Reason(err))
		}
		list, err := array(v, key, MaxChecks)
		if err != nil {
			return nil, err
		}
		var checks []Healthcheck
		for i, item := range list {
			c, err := parseCheck(item, fmt.Sprintf("%s[%d]", key, i))
			if err != nil {
				return nil, err
			}
			checks = append(checks, c)
		}
		if len(checks) > 0 {
			out[typ] = checks
		}
	}
	return out, nil
}

func parseCheck(raw json.RawMessage, key string) (Healthcheck, error) {
	c := Healthcheck{
		Type:     CheckStartup,
		Attempts: DefaultAttempts,
		Timeout:  DefaultTimeout,
		Wait:     DefaultWait,
	}
	obj, err := object(raw, key)
	if err != nil {
		return c, err
	}
	if obj == nil {
		return c, keyErr(key, "want an object, not null")
	}
	if v, ok := obj["type"]; ok {
		t, err := str(v, key+".type")
		if err != nil {
			return c, err
		}
		switch t {
		case CheckStartup, CheckLiveness:
			c.Type = t
		default:
			return c, keyErr(key+".type", "%q: want %q or %q", t, CheckStartup, CheckLiveness)
		}
	}
	if v, ok := obj["name"]; ok {
		if c.Name, err = str(v, key+".name"); err != nil {
			return c, err
		}
	}
	if v, ok := obj["path"]; ok {
		if c.Path, err = str(v, key+".path"); err != nil {
			return c, err
		}
		if _, err := grammar.ParseReadiness("http:" + c.Path); err != nil {
			return c, keyErr(key+".path", "%q: want a path starting with '/', without blanks", c.Path)
		}
	}
	if v, ok := obj["command"]; ok {
		list, err := array(v, key+".command", 1000)
		if err != nil {
			return c, err
		}
		for i, a := range list {
			s, err := str(a, fmt.Sprintf("%s.command[%d]", key, i))
			if err != nil {
				return c, err
			}
			if strings.IndexByte(s, 0) >= 0 {
				return c, keyErr(fmt.Sprintf("%s.command[%d]", key, i), "contains a NUL byte")
			}
			c.Command = append(c.Command, s)
		}
		if len(c.Command) == 0 {
			return c, keyErr(key+".command", "empty command")
		}
	}
	if v, ok := obj["listening"]; ok {
		if err := strictUnmarshal(v, &c.Listening); err != nil {
			return c, keyErr(key+".listening", "%s", jsonReason(err, "true or false"))
		}
	}
	kinds := 0
	for _, set := range []bool{c.Path != "", c.Command != nil, c.Listening} {
		if set {
			kinds++
		}
	}
	if kinds > 1 {
		return c, keyErr(key, "give one of path, command or listening")
	}
	if v, ok := obj["port"]; ok {
		if c.Port, err = integer(v, key+".port", 0, 65535); err != nil {
			return c, err
		}
	}
	if v, ok := obj["attempts"]; ok {
		if c.Attempts, err = integer(v, key+".attempts", 1, 1000); err != nil {
			return c, err
		}
	}
	for _, d := range []struct {
		name string
		dst  *time.Duration
		min  int
	}{
		{"timeout", &c.Timeout, 1},
		{"wait", &c.Wait, 0},
		{"initialDelay", &c.InitialDelay, 0},
		{"uptime", &c.Uptime, 0},
	} {
		if v, ok := obj[d.name]; ok {
			n, err := integer(v, key+"."+d.name, d.min, MaxSeconds)
			if err != nil {
				return c, err
			}
			*d.dst = time.Duration(n) * time.Second
		}
	}
	if kinds == 0 && c.Uptime == 0 {
		// Dokku's default check: the process stays up 10 s.
		c.Uptime = DefaultUptime
	}
	return c, nil
}

func parseCron(raw json.RawMessage) ([]CronJob, error) {
	list, err := array(raw, "cron", MaxCronJobs)
	if err != nil {
		return nil, err
	}
	var jobs []CronJob
	for i, item := range list {
		key := fmt.Sprintf("cron[%d]", i)
		obj, err := object(item, key)
		if err != nil {
			return nil, err
		}
		if obj == nil {
			return nil, keyErr(key, "want an object, not null")
		}
		var j CronJob
		c, ok := obj["command"]
		if !ok {
			return nil, keyErr(key+".command", "missing")
		}
		if j.Command, err = command(c, key+".command"); err != nil {
			return nil, err
		}
		if j.Command == "" {
			return nil, keyErr(key+".command", "empty command")
		}
		s, ok := obj["schedule"]
		if !ok {
			return nil, keyErr(key+".schedule", "missing")
		}
		if j.Schedule, err = str(s, key+".schedule"); err != nil {
			return nil, err
		}
		if err := CheckSchedule(j.Schedule); err != nil {
			return nil, keyErr(key+".schedule", "%q: %v", j.Schedule, err)
		}
		jobs = append(jobs, j)
	}
	return jobs, nil
}

// CheckSchedule validates a cron schedule as the scheduler reads it:
// robfig/cron/v3's standard parser (5 fields, @hourly-style descriptors,
// @every DURATION, an optional CRON_TZ=Zone prefix).
func CheckSchedule(s string) error {
	if strings.TrimSpace(s) == "" {
		return errors.New("empty schedule")
	}
	if strings.HasPrefix(s, "@every ") {
		// robfig accepts @every 0s and negative durations and would then
		// run the job continuously; refuse them here.
		d, err := time.ParseDuration(strings.TrimPrefix(s, "@every "))
		if err == nil && d < time.Second {
			return errors.New("@every needs 1s or more")
		}
	}
	_, err := cron.ParseStandard(s)
	return err
}

// command reads a shell command: a string without control characters
// (other than tab), at most MaxCommandLength bytes, trimmed.
func command(raw json.RawMessage, key string) (string, error) {
	s, err := str(raw, key)
	if err != nil {
		return "", err
	}
	s = strings.TrimSpace(s)
	if len(s) > MaxCommandLength {
		return "", keyErr(key, "longer than %d bytes", MaxCommandLength)
	}
	for _, r := range s {
		// A command runs as a process and shows in `hctl ps` and the logs:
		// a newline or escape sequence there is almost surely a mistake.
		if r != '\t' && (r < 0x20 || r == 0x7f) {
			return "", keyErr(key, "contains control character %U", r)
		}
	}
	return s, nil
}

func object(raw json.RawMessage, key string) (map[string]json.RawMessage, error) {
	var obj map[string]json.RawMessage
	if err := strictUnmarshal(raw, &obj); err != nil {
		return nil, keyErr(key, "%s", jsonReason(err, "an object"))
	}
	return obj, nil
}

func array(raw json.RawMessage, key string, max int) ([]json.RawMessage, error) {
	var list []json.RawMessage
	if err := strictUnmarshal(raw, &list); err != nil {
		return nil, keyErr(key, "%s", jsonReason(err, "a list"))
	}
	if len(list) > max {
		return nil, keyErr(key, "more than %d entries", max)
	}
	return list, nil
}

func str(raw json.RawMessage, key string) (string, error) {
	var s string
	if isNull(raw) {
		return "", keyErr(key, "want a string, not null")
	}
	if err := strictUnmarshal(raw, &s); err != nil {
		return "", keyErr(key, "%s", jsonReason(err, "a string"))
	}
	return s, nil
}

func integer(raw json.RawMessage, key string, min, max int) (int, error) {
	var f json.Number
	if isNull(raw) {
		return 0, keyErr(key, "want a number, not null")
	}
	// json.Number also takes a quoted number ("2"); a number is wanted.
	if t := bytes.TrimSpace(raw); len(t) == 0 || t[0] != '-' && (t[0] < '0' || t[0] > '9') {
		return 0, keyErr(key, "want a whole number")
	}
	if err := strictUnmarshal(raw, &f); err != nil {
		return 0, keyErr(key, "%s", jsonReason(err, "a whole number"))
	}
	n, err := f.Int64()
	if err != nil {
		return 0, keyErr(key, "%s: want a whole number", f)
	}
	if n < int64(min) || n > int64(max) {
		return 0, keyErr(key, "%d: want %d to %d", n, min, max)
	}
	return int(n), nil
}

func isNull(raw json.RawMessage) bool { return string(bytes.TrimSpace(raw)) == "null" }

// strictUnmarshal decodes one JSON value and refuses trailing data.
func strictUnmarshal(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("data after the JSON value")
	}
	return nil
}

// jsonReason words a decoding error for a user: the type error without
// Go's type names, or the syntax error with its offset.
func jsonReason(err error, want string) string {
	if _, ok := errors.AsType[*json.UnmarshalTypeError](err); ok {
		return "want " + want
	}
	if se, ok := errors.AsType[*json.SyntaxError](err); ok {
		return fmt.Sprintf("invalid JSON at byte %d: %v", se.Offset, se)
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return "invalid JSON: unexpected end"
	}
	return "invalid JSON: " + err.Error()
}

// Error is a malformed app.json: the key (empty for the whole file) and
// what is wrong with it. It wraps ErrInvalid.
type Error struct {
	Key    string // e.g. cron[1].schedule; list indexes count from 0
	Reason string
}

func (e *Error) Error() string {
	if e.Key == "" {
		return "app.json: " + e.Reason
	}
	return "app.json: " + e.Key + ": " + e.Reason
}

func (e *Error) Unwrap() error { return ErrInvalid }

func keyErr(key, format string, args ...any) error {
	return &Error{Key: key, Reason: fmt.Sprintf(format, args...)}
}
