package readiness

import (
	"context"
	"errors"
	"net"
)

// Probed reports whether the kind is probed (http, tcp, exec) rather than
// waited for (notify, uptime): only probed kinds can be checked again
// while the process runs, as a bake window does.
func (k Kind) Probed() bool { return k.NeedsProbe() || k.Name == "exec" }

// Check runs one check of a probed kind, as Wait runs them until the
// first success. A tcp check without agentd's copy of the probe socket
// (a process adopted after an agentd restart) is a bare connect.
func Check(ctx context.Context, k Kind, t Target) error {
	switch k.Name {
	case "http":
		if t.Probe == nil {
			return errors.New("no probe socket")
		}
		return checkHTTP(ctx, t.Probe.Addr, k.Path)
	case "tcp":
		if t.Probe == nil {
			return errors.New("no probe socket")
		}
		if t.Probe.File == nil {
			var d net.Dialer
			c, err := d.DialContext(ctx, "tcp", t.Probe.Addr)
			if err != nil {
				return err
			}
			return c.Close()
		}
		return checkTCP(ctx, t.Probe)
	case "exec":
		return checkExec(ctx, k.Cmd, t.Dir, t.Env, t.Credential)
	}
	return errors.New("readiness " + k.String() + " is not probed")
}
