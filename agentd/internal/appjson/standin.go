// Package appjson reads a release's app.json.
//
// STAND-IN (branch cron15): only the part of the agreed API that cron
// needs (Load, Parse, Manifest.Cron, CronJob, ErrInvalid). Branch
// appjson15 owns the real package; this file is deleted when its first
// commit is cherry-picked.
package appjson

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/agentd/agentd/agentd/internal/cronsched"
)

// ErrInvalid marks an app.json that is malformed.
var ErrInvalid = errors.New("invalid app.json")

// Manifest is a release's app.json (the part cron reads).
type Manifest struct {
	Cron []CronJob
}

// CronJob is one entry of "cron".
type CronJob struct {
	Command  string
	Schedule string
}

// Load reads RELEASE_DIR/app.json; (nil, nil) when there is none.
func Load(releaseDir string) (*Manifest, error) {
	b, err := os.ReadFile(filepath.Join(releaseDir, "app.json"))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("app.json: %w", err)
	}
	return Parse(b)
}

// Parse parses and validates app.json.
func Parse(data []byte) (*Manifest, error) {
	var raw struct {
		Cron []struct {
			Command  string `json:"command"`
			Schedule string `json:"schedule"`
		} `json:"cron"`
	}
	if err := json.Unmarshal(data, &raw); err != nil {
		return nil, fmt.Errorf("%w: app.json: %w", ErrInvalid, err)
	}
	m := &Manifest{}
	for i, c := range raw.Cron {
		if strings.TrimSpace(c.Command) == "" {
			return nil, fmt.Errorf("%w: app.json: cron[%d].command: empty", ErrInvalid, i)
		}
		if _, err := cronsched.Parse(c.Schedule); err != nil {
			return nil, fmt.Errorf("%w: app.json: cron[%d].schedule: %w", ErrInvalid, i, err)
		}
		m.Cron = append(m.Cron, CronJob{Command: c.Command, Schedule: c.Schedule})
	}
	return m, nil
}
