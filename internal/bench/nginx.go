package main

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// nginxServer is an nginx of the benchmark's own: its own prefix, config,
// pid file and logs in a private directory, run in the foreground (daemon
// off) as a child in its own process group. It is reloaded and stopped by
// signalling that process, never through systemctl or by name.
type nginxServer struct {
	bin  string
	dir  string
	port int
	c    *child
}

// nginxConf is a reverse proxy to one upstream with kept-alive upstream
// connections (the fair configuration: without them nginx opens a
// connection to the app per request) and no retries, so that a failure
// reaches the client as it would without the proxy.
const nginxConf = `# written by make bench
daemon off;
master_process on;
worker_processes 2;
pid {{DIR}}/nginx.pid;
error_log {{DIR}}/error.log warn;
worker_shutdown_timeout 10s;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path {{DIR}}/client_body;
    proxy_temp_path {{DIR}}/proxy;
    fastcgi_temp_path {{DIR}}/fastcgi;
    uwsgi_temp_path {{DIR}}/uwsgi;
    scgi_temp_path {{DIR}}/scgi;
    keepalive_requests 1000000;
    upstream app {
        server {{UPSTREAM}} max_fails=0;
        keepalive 64;
        keepalive_requests 1000000;
    }
    server {
        listen 127.0.0.1:{{PORT}} backlog=4096;
        location / {
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_next_upstream off;
            proxy_buffering off;
        }
    }
}
`

// startNginx starts nginx on port proxying to upstream (host:port) and
// returns once it accepts connections.
func startNginx(bin, dir string, port int, upstream string) (*nginxServer, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	n := &nginxServer{bin: bin, dir: dir, port: port}
	if err := n.writeConf(upstream); err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, "-p", dir, "-c", n.confPath(), "-e", filepath.Join(dir, "error.log"))
	out, err := os.Create(filepath.Join(dir, "nginx.out"))
	if err != nil {
		return nil, err
	}
	defer out.Close()
	cmd.Stdout, cmd.Stderr = out, out
	if n.c, err = startChild("nginx", cmd); err != nil {
		return nil, err
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), time.Second)
		if err == nil {
			c.Close()
			if len(n.workers()) > 0 {
				return n, nil
			}
		}
		select {
		case <-n.c.done:
			b, _ := os.ReadFile(filepath.Join(dir, "error.log"))
			o, _ := os.ReadFile(filepath.Join(dir, "nginx.out"))
			return nil, fmt.Errorf("nginx exited at start: %s%s", o, b)
		default:
		}
		if time.Now().After(deadline) {
			n.stop()
			return nil, fmt.Errorf("nginx did not listen on port %d within 15s", port)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (n *nginxServer) confPath() string { return filepath.Join(n.dir, "nginx.conf") }

func (n *nginxServer) writeConf(upstream string) error {
	conf := strings.NewReplacer("{{DIR}}", n.dir, "{{UPSTREAM}}", upstream, "{{PORT}}", strconv.Itoa(n.port)).Replace(nginxConf)
	tmp := n.confPath() + ".tmp"
	if err := os.WriteFile(tmp, []byte(conf), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, n.confPath())
}

// workers lists the master's child processes (its workers).
func (n *nginxServer) workers() []int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", n.c.pid, n.c.pid))
	if err != nil {
		return nil
	}
	var pids []int
	for f := range strings.FieldsSeq(string(b)) {
		if pid, err := strconv.Atoi(f); err == nil {
			pids = append(pids, pid)
		}
	}
	return pids
}

// reload points nginx at a new upstream by rewriting its configuration and
// sending SIGHUP (what `nginx -s reload` does), then waits until every
// worker of the old configuration has exited, so that nothing is sent to
// the old upstream any more.
func (n *nginxServer) reload(upstream string) error {
	if err := n.writeConf(upstream); err != nil {
		return err
	}
	old := n.workers()
	n.c.signal(syscall.SIGHUP)
	deadline := time.Now().Add(20 * time.Second)
	for {
		cur := n.workers()
		gone := true
		for _, pid := range old {
			for _, c := range cur {
				if c == pid {
					gone = false
				}
			}
		}
		if gone && len(cur) > 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("nginx reload: old workers %v still running after 20s", old)
		}
		time.Sleep(time.Millisecond)
	}
}

// stop stops nginx gracefully (SIGQUIT), SIGKILLing its group after 10s.
func (n *nginxServer) stop() {
	if n.c != nil {
		n.c.stop(syscall.SIGQUIT, 10*time.Second)
	}
}

// nginxMethod is a blue/green switch behind nginx: the new release starts on
// the other of two ports, and once it is ready nginx is reloaded with it as
// the upstream; the old release is stopped when the old nginx workers are
// gone.
type nginxMethod struct {
	plainMethod
	ports [2]int
	ng    *nginxServer
}

func newNginxMethod(bins binaries, dir string, bootDelay time.Duration) (*nginxMethod, error) {
	m := &nginxMethod{plainMethod: plainMethod{bin: bins.BenchApp, dir: dir, bootDelay: bootDelay}}
	for i := range m.ports {
		p, err := freePort()
		if err != nil {
			return nil, err
		}
		m.ports[i] = p
	}
	front, err := freePort()
	if err != nil {
		return nil, err
	}
	if m.cur, err = m.startOn(0); err != nil {
		return nil, err
	}
	if m.ng, err = startNginx(bins.Nginx, filepath.Join(dir, "nginx"), front, fmt.Sprintf("127.0.0.1:%d", m.ports[0])); err != nil {
		m.cur.stop(syscall.SIGTERM, 30*time.Second)
		return nil, err
	}
	return m, nil
}

// startOn starts release i on port i%2 (blue, green, blue, ...).
func (m *nginxMethod) startOn(i int) (*appProc, error) {
	return startApp(m.bin, m.dir, appEnv(i, m.ports[i%2], "port", m.bootDelay), 30*time.Second)
}

func (m *nginxMethod) name() string { return "nginx blue/green" }
func (m *nginxMethod) url() string  { return fmt.Sprintf("http://127.0.0.1:%d/", m.ng.port) }

func (m *nginxMethod) deploy(i int) (deployStat, error) {
	t0 := time.Now()
	p, err := m.startOn(i)
	if err != nil {
		return deployStat{}, err
	}
	if err := m.ng.reload(fmt.Sprintf("127.0.0.1:%d", m.ports[i%2])); err != nil {
		p.stop(syscall.SIGTERM, 30*time.Second)
		return deployStat{}, err
	}
	sw := time.Since(t0)
	drain, killed := m.cur.stop(syscall.SIGTERM, 30*time.Second)
	m.cur = p
	st := deployStat{
		Switch: sw.Seconds(), Boot: p.boot().Seconds(), Exec: p.exec().Seconds(),
		Direct: p.readyAt.Sub(p.startAt).Seconds(), DirectExec: p.exec().Seconds(), Drain: drain.Seconds(), Wall: time.Since(t0).Seconds(),
	}
	if killed {
		st.Killed = 1
	}
	return st, nil
}

func (m *nginxMethod) close() {
	if m.ng != nil {
		m.ng.stop()
	}
	m.plainMethod.close()
}
