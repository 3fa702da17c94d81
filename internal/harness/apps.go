package harness

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"time"

	"github.com/agentd/agentd/agentd/api"
)

// CreateApp creates an app on a free loopback port and returns its URL.
// Its processes run as the caller's user (root in CI, hence --allow-root).
func (a *Agentd) CreateApp(name string, args ...string) (string, error) {
	if r := a.Hctl(append([]string{"apps", "create", name, "--socket", "web=tcp://127.0.0.1:0", "--allow-root"}, args...)...); r.Code != 0 {
		return "", fmt.Errorf("hctl apps create %s: %s", name, r)
	}
	var info api.AppInfo
	if r := a.HctlJSON(&info, "apps", "info", name); r.Code != 0 {
		return "", fmt.Errorf("hctl apps info %s: %s", name, r)
	}
	if len(info.Sockets) == 0 || info.Sockets[0].Bound == "" {
		return "", fmt.Errorf("app %s has no bound socket: %+v", name, info)
	}
	return "http://" + info.Sockets[0].Bound + "/", nil
}

// Deploy deploys dir (a directory or a .tar.gz) to app with hctl and
// returns the operation's result; an error only when hctl could not say.
func (a *Agentd) Deploy(app, dir string, args ...string) (api.OpResult, error) {
	var res api.OpResult
	if r := a.HctlJSON(&res, append([]string{"deploy", app, dir}, args...)...); r.Code != 0 {
		return res, fmt.Errorf("deploy %s: %s", dir, r)
	}
	return res, nil
}

// Get answers url's body, on a connection of its own.
func Get(url string) (string, error) {
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

// TestMain builds the binaries into a temporary directory, sets *bins,
// runs the package's tests (m.Run) and removes the directory: the
// TestMain of every package of end-to-end tests.
func TestMain(m interface{ Run() int }, bins *Bins) int {
	dir, err := os.MkdirTemp("", "agentd-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	if *bins, err = Build(dir); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return m.Run()
}
