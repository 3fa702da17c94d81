package appjson

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/agentd/agentd/grammar"
)

const full = `{
  "name": "demo", "env": {"X": {"value": "1"}}, "addons": ["heroku-postgresql"],
  "formation": {"web": {"quantity": 2, "size": "standard-1x"}, "worker": {}},
  "scripts": {
    "postdeploy": "bin/seed",
    "pr-predestroy": "ignored",
    "dokku": {"predeploy": "bin/migrate", "postdeploy": {"command": "bin/notify"}},
    "agentd": {"postdrain": " bin/contract "}
  },
  "healthchecks": {
    "web": [
      {"type": "startup", "name": "ready", "path": "/healthz", "port": 5000, "attempts": 4,
       "timeout": 2, "wait": 1, "initialDelay": 3, "content": "ok"},
      {"type": "liveness", "path": "/live"}
    ],
    "worker": [{"command": ["test", "-f", "/tmp/it's up"]}, {"type": "startup", "uptime": 7}],
    "clock": [{"listening": true}]
  },
  "cron": [
    {"command": "bin/report", "schedule": "5 * * * *"},
    {"command": "bin/tick", "schedule": "@every 10s"},
    {"command": "bin/daily", "schedule": "CRON_TZ=Europe/Paris @daily"}
  ]
}`

func TestParseFull(t *testing.T) {
	m, err := Parse([]byte(full))
	if err != nil {
		t.Fatal(err)
	}
	want := &Manifest{
		Formation: map[string]Formation{"web": {Quantity: 2}, "worker": {Quantity: 1}},
		Scripts: Scripts{
			Postdeploy:      "bin/seed",
			DokkuPredeploy:  "bin/migrate",
			DokkuPostdeploy: "bin/notify",
			AgentdPostdrain: "bin/contract",
		},
		Healthchecks: map[string][]Healthcheck{
			"web": {
				{Type: CheckStartup, Name: "ready", Path: "/healthz", Port: 5000, Attempts: 4,
					Timeout: 2 * time.Second, Wait: time.Second, InitialDelay: 3 * time.Second},
				{Type: CheckLiveness, Path: "/live", Attempts: DefaultAttempts, Timeout: DefaultTimeout, Wait: DefaultWait},
			},
			"worker": {
				{Type: CheckStartup, Command: []string{"test", "-f", "/tmp/it's up"}, Attempts: DefaultAttempts, Timeout: DefaultTimeout, Wait: DefaultWait},
				{Type: CheckStartup, Uptime: 7 * time.Second, Attempts: DefaultAttempts, Timeout: DefaultTimeout, Wait: DefaultWait},
			},
			"clock": {
				{Type: CheckStartup, Listening: true, Attempts: DefaultAttempts, Timeout: DefaultTimeout, Wait: DefaultWait},
			},
		},
		Cron: []CronJob{
			{Command: "bin/report", Schedule: "5 * * * *"},
			{Command: "bin/tick", Schedule: "@every 10s"},
			{Command: "bin/daily", Schedule: "CRON_TZ=Europe/Paris @daily"},
		},
	}
	if diff := cmp.Diff(want, m); diff != "" {
		t.Fatalf("manifest (-want +got):\n%s", diff)
	}
	for _, c := range []struct {
		check Healthcheck
		want  string
	}{
		{m.Healthchecks["web"][0], "http:/healthz"},
		{m.Healthchecks["worker"][0], `exec:test -f '/tmp/it'\''s up'`},
		{m.Healthchecks["worker"][1], "uptime:7s"},
		{m.Healthchecks["clock"][0], "tcp"},
		{Healthcheck{Uptime: DefaultUptime}, "uptime:10s"},
	} {
		if got := c.check.Readiness().String(); got != c.want {
			t.Errorf("Readiness() = %q, want %q", got, c.want)
		}
	}
}

func TestParseEmpty(t *testing.T) {
	for _, s := range []string{`{}`, "\ufeff{}", `{"scripts": {}, "formation": {}, "healthchecks": {}, "cron": []}`, `{"scripts": null, "cron": null}`} {
		m, err := Parse([]byte(s))
		if err != nil {
			t.Fatalf("%q: %v", s, err)
		}
		if m.Scripts != (Scripts{}) || len(m.Formation) != 0 || len(m.Healthchecks) != 0 || len(m.Cron) != 0 {
			t.Errorf("%q: got %+v, want an empty manifest", s, m)
		}
	}
}

func TestParseErrorsNameTheKey(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{``, "app.json: invalid JSON"},
		{`[]`, "app.json: want an object"},
		{`null`, "app.json: want an object, not null"},
		{`{} {}`, "app.json: invalid JSON"},
		{`{"a": 1,}`, "app.json: invalid JSON at byte"},
		{"{\"a\": \"\xff\"}", "app.json: not valid UTF-8"},
		{`{"formation": []}`, "app.json: formation: want an object"},
		{`{"formation": {"web": 2}}`, "app.json: formation.web: want an object"},
		{`{"formation": {"we b": {}}}`, "app.json: formation.we b: use 1 to 30"},
		{`{"formation": {"web": {"quantity": -1}}}`, "app.json: formation.web.quantity: -1: want 0 to 100"},
		{`{"formation": {"web": {"quantity": 1.5}}}`, "app.json: formation.web.quantity: 1.5: want a whole number"},
		{`{"formation": {"web": {"quantity": "2"}}}`, "app.json: formation.web.quantity: want a whole number"},
		{`{"scripts": "x"}`, "app.json: scripts: want an object"},
		{`{"scripts": {"postdeploy": 1}}`, "app.json: scripts.postdeploy: want a string"},
		{`{"scripts": {"postdeploy": {"size": "x"}}}`, "app.json: scripts.postdeploy: want a command string"},
		{`{"scripts": {"dokku": []}}`, "app.json: scripts.dokku: want an object"},
		{`{"scripts": {"dokku": {"predeploy": "a\nb"}}}`, "app.json: scripts.dokku.predeploy: contains control character U+000A"},
		{`{"scripts": {"dokku": {"postdeploy": true}}}`, "app.json: scripts.dokku.postdeploy: want a string"},
		{`{"scripts": {"agentd": {"postdrain": ["x"]}}}`, "app.json: scripts.agentd.postdrain: want a string"},
		{`{"healthchecks": {"web": {}}}`, "app.json: healthchecks.web: want a list"},
		{`{"healthchecks": {"web": [null]}}`, "app.json: healthchecks.web[0]: want an object, not null"},
		{`{"healthchecks": {"web": [{}, {"type": "readiness"}]}}`, `app.json: healthchecks.web[1].type: "readiness": want "startup" or "liveness"`},
		{`{"healthchecks": {"web": [{"path": "healthz"}]}}`, `app.json: healthchecks.web[0].path: "healthz": want a path starting with '/'`},
		{`{"healthchecks": {"web": [{"path": "/a", "listening": true}]}}`, "app.json: healthchecks.web[0]: give one of path, command or listening"},
		{`{"healthchecks": {"web": [{"attempts": 0}]}}`, "app.json: healthchecks.web[0].attempts: 0: want 1 to 1000"},
		{`{"healthchecks": {"web": [{"timeout": "5s"}]}}`, "app.json: healthchecks.web[0].timeout: want a whole number"},
		{`{"healthchecks": {"web": [{"port": 70000}]}}`, "app.json: healthchecks.web[0].port: 70000: want 0 to 65535"},
		{`{"healthchecks": {"web": [{"command": []}]}}`, "app.json: healthchecks.web[0].command: empty command"},
		{`{"healthchecks": {"web": [{"command": "ls"}]}}`, "app.json: healthchecks.web[0].command: want a list"},
		{`{"healthchecks": {"web": [{"listening": "yes"}]}}`, "app.json: healthchecks.web[0].listening: want true or false"},
		{`{"cron": {}}`, "app.json: cron: want a list"},
		{`{"cron": [1]}`, "app.json: cron[0]: want an object"},
		{`{"cron": [{"schedule": "@hourly"}]}`, "app.json: cron[0].command: missing"},
		{`{"cron": [{"command": "x", "schedule": "@hourly"}, {"command": "x", "schedule": "61 * * * *"}]}`, `app.json: cron[1].schedule: "61 * * * *": `},
		{`{"cron": [{"command": "x", "schedule": "* * * *"}]}`, `app.json: cron[0].schedule: "* * * *": `},
		{`{"cron": [{"command": "x"}]}`, "app.json: cron[0].schedule: missing"},
		{`{"cron": [{"command": " ", "schedule": "@hourly"}]}`, "app.json: cron[0].command: empty command"},
		{`{"cron": [{"command": "x", "schedule": "@every 0s"}]}`, "app.json: cron[0].schedule: \"@every 0s\": @every needs 1s or more"},
		{`{"cron": [{"command": "x", "schedule": "CRON_TZ=Nowhere/Nope @daily"}]}`, "app.json: cron[0].schedule:"},
		{`{"cron": [{"command": "x", "schedule": "@fortnightly"}]}`, "app.json: cron[0].schedule:"},
	} {
		_, err := Parse([]byte(c.in))
		if err == nil {
			t.Errorf("%s: no error, want %q", c.in, c.want)
			continue
		}
		if !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: %v does not wrap ErrInvalid", c.in, err)
		}
		if !strings.HasPrefix(err.Error(), c.want) {
			t.Errorf("%s:\n got %q\nwant %q...", c.in, err, c.want)
		}
	}
}

func TestParseTooLarge(t *testing.T) {
	big := `{"name": "` + strings.Repeat("x", MaxSize) + `"}`
	if _, err := Parse([]byte(big)); !errors.Is(err, ErrInvalid) {
		t.Fatalf("Parse of %d bytes: %v, want ErrInvalid", len(big), err)
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	m, err := Load(dir)
	if m != nil || err != nil {
		t.Fatalf("Load without app.json = %v, %v; want nil, nil", m, err)
	}
	if err := os.WriteFile(filepath.Join(dir, FileName), []byte(`{"formation": {"web": {"quantity": 3}}}`), 0o644); err != nil {
		t.Fatal(err)
	}
	m, err = Load(dir)
	if err != nil || m.Formation["web"].Quantity != 3 {
		t.Fatalf("Load = %+v, %v; want web quantity 3", m, err)
	}
	sub := t.TempDir()
	if err := os.Mkdir(filepath.Join(sub, FileName), 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(sub); !errors.Is(err, ErrInvalid) {
		t.Fatalf("Load of a directory app.json: %v, want ErrInvalid", err)
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{
		full, `{}`, `null`, `[]`, `{"cron": [{"command": "x", "schedule": "@every 1s"}]}`,
		`{"healthchecks": {"web": [{"type": "liveness", "path": "/", "attempts": 1}]}}`,
		`{"scripts": {"postdeploy": {"command": "x"}}}`, `{"formation": {"web": {"quantity": 1e2}}}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := Parse(data)
		if err != nil {
			if !errors.Is(err, ErrInvalid) || !strings.HasPrefix(err.Error(), "app.json: ") {
				t.Fatalf("error %q: want an *Error starting with \"app.json: \"", err)
			}
			return
		}
		for _, j := range m.Cron {
			if err := CheckSchedule(j.Schedule); err != nil || j.Command == "" {
				t.Fatalf("accepted cron job %+v: %v", j, err)
			}
		}
		for typ, checks := range m.Healthchecks {
			for _, c := range checks {
				if _, err := grammarParse(c.Readiness().String()); err != nil {
					t.Fatalf("healthchecks.%s: %+v gives readiness %q: %v", typ, c, c.Readiness(), err)
				}
				if c.Attempts < 1 || c.Timeout <= 0 {
					t.Fatalf("healthchecks.%s: %+v", typ, c)
				}
			}
		}
		for typ, f := range m.Formation {
			if f.Quantity < 0 || f.Quantity > 100 {
				t.Fatalf("formation.%s: %+v", typ, f)
			}
		}
	})
}

func grammarParse(s string) (any, error) { return grammar.ParseReadiness(s) }
