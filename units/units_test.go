// Package units holds agentd's systemd units; its tests check them with
// systemd-analyze verify (`make units-verify`, and so `make test`).
package units

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// unitFiles returns the unit files of this directory.
func unitFiles(t *testing.T) []string {
	t.Helper()
	var files []string
	for _, pat := range []string{"*.service", "*.socket"} {
		m, err := filepath.Glob(pat)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, m...)
	}
	if len(files) < 3 {
		t.Fatalf("unit files: %v, want agentd.service, agentd.socket and an app socket example", files)
	}
	return files
}

// TestVerify runs systemd-analyze verify on every unit. verify also insists
// that ExecStart's binary exists and is executable, and /usr/bin/agentd is
// not installed here, so the units are verified as copies whose ExecStart
// points at a stand-in script; everything else (keys, values, dependencies,
// /bin/kill of ExecReload) is checked as written. Any output fails the test:
// systemd-analyze only warns, exit status 0, about a key this systemd does
// not know. Man pages are not looked up (--man=no); make package-test
// verifies the packaged units with the packaged binary and man pages.
func TestVerify(t *testing.T) {
	sa, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze is not installed (apt-get install systemd): units not verified")
	}
	dir := t.TempDir()
	stub := filepath.Join(dir, "agentd")
	if err := os.WriteFile(stub, []byte("#!/bin/sh\nexit 0\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	args := []string{"verify", "--man=no"}
	for _, f := range unitFiles(t) {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		s := string(b)
		if f == "agentd.service" {
			if !strings.Contains(s, "\nExecStart=/usr/bin/agentd ") {
				t.Fatalf("%s: ExecStart is not /usr/bin/agentd, where the packages install it", f)
			}
			s = strings.ReplaceAll(s, "ExecStart=/usr/bin/agentd ", "ExecStart="+stub+" ")
		}
		dst := filepath.Join(dir, f)
		if err := os.WriteFile(dst, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
		args = append(args, dst)
	}
	out, err := exec.Command(sa, args...).CombinedOutput()
	if err != nil || len(out) > 0 {
		t.Fatalf("systemd-analyze %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// settings reads a unit file into section.Key -> values (in order).
func settings(t *testing.T, file string) map[string][]string {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	m := map[string][]string{}
	section := ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";"):
		case strings.HasPrefix(line, "["):
			section = strings.Trim(line, "[]")
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok {
				t.Fatalf("%s: bad line %q", file, line)
			}
			m[section+"."+k] = append(m[section+"."+k], v)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return m
}

// TestSettings pins the settings agentd's behaviour depends on; each is
// explained in the unit file's comments.
func TestSettings(t *testing.T) {
	want := map[string]map[string]string{
		"agentd.service": {
			"Unit.Requires":                    "agentd.socket",
			"Service.Type":                     "notify",
			"Service.NotifyAccess":             "all",
			"Service.ExecStart":                "/usr/bin/agentd $AGENTD_OPTS",
			"Service.ExecReload":               "/bin/kill -HUP $MAINPID",
			"Service.KillMode":                 "process",
			"Service.WatchdogSec":              "30s",
			"Service.FileDescriptorStoreMax":   "4096",
			"Service.StateDirectory":           "agentd",
			"Service.RuntimeDirectory":         "agentd",
			"Service.RuntimeDirectoryPreserve": "yes",
			"Install.WantedBy":                 "multi-user.target",
			"Install.Also":                     "agentd.socket",
		},
		"agentd.socket": {
			"Socket.ListenStream":       "/run/agentd/agentd.sock",
			"Socket.SocketMode":         "0660",
			"Socket.SocketGroup":        "agentd",
			"Socket.FileDescriptorName": "control",
			"Socket.Service":            "agentd.service",
			"Install.WantedBy":          "sockets.target",
		},
	}
	for file, kv := range want {
		got := settings(t, file)
		for k, v := range kv {
			if g := got[k]; len(g) != 1 || g[0] != v {
				t.Errorf("%s: %s = %q, want %q", file, k, g, v)
			}
		}
	}
	// Settings the apps would inherit from agentd (see agentd.service).
	svc := settings(t, "agentd.service")
	for _, k := range []string{"NoNewPrivileges", "PrivateTmp", "ProtectHome", "PrivateDevices",
		"ProtectHostname", "MemoryDenyWriteExecute", "SystemCallFilter", "RestrictNamespaces"} {
		if v, ok := svc["Service."+k]; ok {
			t.Errorf("agentd.service sets %s=%s, which every app process would inherit", k, v[0])
		}
	}

	// App socket units: handed to agentd, named APP.NAME.
	appName := regexp.MustCompile(`^[a-z][a-z0-9-]{0,29}\.[^.:\s]+$`)
	for _, f := range unitFiles(t) {
		if !strings.HasSuffix(f, ".socket") || f == "agentd.socket" {
			continue
		}
		s := settings(t, f)
		if g := s["Socket.Service"]; len(g) != 1 || g[0] != "agentd.service" {
			t.Errorf("%s: Service = %q, want agentd.service", f, g)
		}
		if g := s["Socket.FileDescriptorName"]; len(g) != 1 || !appName.MatchString(g[0]) {
			t.Errorf("%s: FileDescriptorName = %q, want APP.NAME", f, g)
		}
		if g := s["Socket.Accept"]; len(g) > 0 && g[0] != "no" {
			t.Errorf("%s: Accept = %q: agentd needs the listening socket itself", f, g)
		}
	}
}
