package intake

import (
	"bytes"
	"log/slog"
	"os"
	"strings"
	"testing"
)

func TestTakeWithoutSystemd(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	t.Setenv("LISTEN_FDS", "")
	in, err := Take(slog.Default())
	if err != nil {
		t.Fatal(err)
	}
	if in.Mode != ModeEmbedded || in.Control != nil {
		t.Errorf("mode %s, control %v; want embedded and none", in.Mode, in.Control)
	}
	if store, unstore := in.FDStore(); store != nil || unstore != nil {
		t.Error("an fd store without systemd")
	}
	if f := in.Claim("app.web"); f != nil {
		t.Errorf("claimed %v from nothing", f)
	}
}

func TestModeSystemd(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "/nonexistent/notify")
	t.Setenv("LISTEN_FDS", "")
	in, err := Take(slog.Default())
	if err != nil {
		t.Fatal(err)
	}
	if store, unstore := in.FDStore(); in.Mode != ModeSystemd || store == nil || unstore == nil {
		t.Errorf("mode %s under NOTIFY_SOCKET, or no fd store", in.Mode)
	}
}

func TestClaimOnceAndWarnUnclaimed(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close(); w.Close() })
	var logs bytes.Buffer
	in := &Intake{Mode: ModeSystemd, log: slog.New(slog.NewTextHandler(&logs, nil)),
		pool: map[string]*os.File{"blog.web": r, "old.web": w}}
	if f := in.Claim("blog.web"); f != r {
		t.Fatalf("Claim(blog.web) = %v", f)
	}
	if f := in.Claim("blog.web"); f != nil {
		t.Errorf("blog.web claimed twice")
	}
	in.WarnUnclaimed()
	if got := logs.String(); !strings.Contains(got, "fdname=old.web") || strings.Contains(got, "blog.web") {
		t.Errorf("warnings:\n%s", got)
	}
}
