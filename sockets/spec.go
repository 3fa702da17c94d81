// Package sockets holds everything agentd does with app sockets: parsing
// socket specs, binding them, and handing them to app processes with the
// systemd socket-activation protocol (LISTEN_FDS, LISTEN_FDNAMES, LISTEN_PID)
// through an exec shim.
//
// The model: agentd binds (or receives) every listening socket of an app once
// and holds it for the app's whole life. Each process of a release gets the
// very same kernel sockets as fds 3.., so old and new processes accept from
// one queue during a deploy and nothing queued is lost when the old ones stop.
package sockets

import (
	"fmt"
	"net"
	"net/url"
	"os/user"
	"regexp"
	"strconv"
	"strings"
	"sync"
)

// DefaultType is the process type that receives a socket whose spec names
// none.
const DefaultType = "web"

// Compiled on first use: the exec shim is this binary too, and every
// process start would pay for compiling them at init.
var (
	nameRe = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^[a-zA-Z0-9_-]{1,64}$`) })
	typeRe = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^[a-zA-Z0-9_-]{1,30}$`) })
)

// Spec is a named listening socket of an app: "[TYPE/]NAME=ADDR".
type Spec struct {
	Type string `json:"type"` // process type that receives it
	Name string `json:"name"` // LISTEN_FDNAMES entry
	Addr string `json:"addr"` // as given: tcp://HOST:PORT, tcp6://[HOST]:PORT, unix:///path

	// Network and Address are what Addr means to net.Listen.
	Network string `json:"network"`
	Address string `json:"address"`
	// Mode and Owner apply to unix sockets only ("unix:///p?mode=0660&owner=u:g").
	Mode  uint32 `json:"mode,omitempty"`
	Owner string `json:"owner,omitempty"`
}

// String renders the spec as it is written on the command line.
func (s Spec) String() string {
	return s.Type + "/" + s.Name + "=" + s.Addr
}

// ParseSpec parses "[TYPE/]NAME=ADDR".
func ParseSpec(s string) (Spec, error) {
	left, addr, ok := strings.Cut(s, "=")
	if !ok {
		return Spec{}, fmt.Errorf("socket %q: want [TYPE/]NAME=ADDR, e.g. web=tcp://127.0.0.1:8080", s)
	}
	typ, name := DefaultType, left
	if t, n, ok := strings.Cut(left, "/"); ok {
		typ, name = t, n
	}
	if !typeRe().MatchString(typ) {
		return Spec{}, fmt.Errorf("socket %q: process type %q must be 1-30 letters, digits, '-' or '_'", s, typ)
	}
	if !nameRe().MatchString(name) || name == "probe" {
		return Spec{}, fmt.Errorf("socket %q: name %q must be 1-64 letters, digits, '-' or '_' and not \"probe\" (agentd's probe fd)", s, name)
	}
	sp := Spec{Type: typ, Name: name, Addr: addr}
	if err := sp.parseAddr(); err != nil {
		return Spec{}, fmt.Errorf("socket %q: %w", s, err)
	}
	return sp, nil
}

func (s *Spec) parseAddr() error {
	u, err := url.Parse(s.Addr)
	if err != nil {
		return fmt.Errorf("bad address %q: %w", s.Addr, err)
	}
	switch u.Scheme {
	case "tcp", "tcp6":
		if u.Path != "" || u.RawQuery != "" || u.User != nil || u.Fragment != "" {
			return fmt.Errorf("bad address %q: want %s://HOST:PORT", s.Addr, u.Scheme)
		}
		host, port, err := net.SplitHostPort(u.Host)
		if err != nil {
			return fmt.Errorf("bad address %q: %w", s.Addr, err)
		}
		p, err := strconv.Atoi(port)
		if err != nil || p < 0 || p > 65535 {
			return fmt.Errorf("bad address %q: port %q is not a number from 0 to 65535", s.Addr, port)
		}
		if host != "" && host != "localhost" {
			ip := net.ParseIP(host)
			if ip == nil {
				return fmt.Errorf("bad address %q: host %q is not an IP address", s.Addr, host)
			}
			if u.Scheme == "tcp6" && ip.To4() != nil {
				return fmt.Errorf("bad address %q: tcp6 wants an IPv6 address such as [::1]", s.Addr)
			}
		}
		s.Network = u.Scheme
		s.Address = u.Host
	case "unix":
		if u.Host != "" || !strings.HasPrefix(u.Path, "/") {
			return fmt.Errorf("bad address %q: want unix:///absolute/path", s.Addr)
		}
		if len(u.Path) > 107 {
			return fmt.Errorf("bad address %q: a unix socket path has at most 107 bytes", s.Addr)
		}
		s.Network, s.Address = "unix", u.Path
		q := u.Query()
		for k := range q {
			if k != "mode" && k != "owner" {
				return fmt.Errorf("bad address %q: unknown option %q (mode, owner)", s.Addr, k)
			}
		}
		if m := q.Get("mode"); m != "" {
			v, err := strconv.ParseUint(m, 8, 32)
			if err != nil || v > 0o777 {
				return fmt.Errorf("bad address %q: mode %q is not an octal permission like 0660", s.Addr, m)
			}
			s.Mode = uint32(v)
		}
		if o := q.Get("owner"); o != "" {
			if _, _, err := lookupOwner(o); err != nil {
				return fmt.Errorf("bad address %q: %w", s.Addr, err)
			}
			s.Owner = o
		}
	default:
		return fmt.Errorf("bad address %q: want tcp://HOST:PORT, tcp6://[HOST]:PORT or unix:///path", s.Addr)
	}
	return nil
}

// lookupOwner resolves "user[:group]" to numeric ids.
func lookupOwner(o string) (uid, gid int, err error) {
	un, gn, hasGroup := strings.Cut(o, ":")
	u, err := user.Lookup(un)
	if err != nil {
		return 0, 0, fmt.Errorf("owner %q: %w", o, err)
	}
	uid, _ = strconv.Atoi(u.Uid)
	gid, _ = strconv.Atoi(u.Gid)
	if hasGroup {
		g, err := user.LookupGroup(gn)
		if err != nil {
			return 0, 0, fmt.Errorf("owner %q: %w", o, err)
		}
		gid, _ = strconv.Atoi(g.Gid)
	}
	return uid, gid, nil
}
