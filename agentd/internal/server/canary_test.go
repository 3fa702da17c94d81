package server

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/agentd/agentd/agentd/api"
)

// TestCanaryWhoMay: promote, abort and a canary deploy are changes (the
// admin's); anyone who can connect may look at a canary.
func TestCanaryWhoMay(t *testing.T) {
	h := newServer(newAgent(t)).Handler()
	for _, rq := range [][3]string{
		{"POST", "/v1/apps/a/promote", "{}"},
		{"POST", "/v1/apps/a/canary/abort", "{}"},
		{"POST", "/v1/apps/a/deploys?canary=10", "x"},
		{"POST", "/v1/apps/a/uploads/x/deploy?canary=10", ""},
	} {
		for _, p := range []Peer{stranger, {}} {
			w := do(h, p, rq[0], rq[1], rq[2])
			if w.Code != http.StatusForbidden || !strings.Contains(w.Body.String(), "may read but not change anything") {
				t.Errorf("%s %s by %+v: %d %s, want 403", rq[0], rq[1], p, w.Code, w.Body)
			}
		}
	}
	if w := do(h, stranger, "GET", "/v1/apps/a/canary", ""); w.Code == http.StatusForbidden || w.Code == http.StatusNotFound && strings.Contains(w.Body.String(), "no such endpoint") {
		t.Errorf("GET canary by a stranger: %d %s", w.Code, w.Body)
	}
}

// TestCanaryParam: a deploy's canary= is read with the grammar, on both
// deploy routes; a bad one is refused before anything starts, saying why,
// and the upload stays for a corrected deploy.
func TestCanaryParam(t *testing.T) {
	ag := newAgent(t)
	h := newServer(ag).Handler()
	st, err := ag.Store()
	if err != nil {
		t.Fatal(err)
	}
	procfile := "web: ./x\n"
	u, _, err := st.NewUpload([]api.ManifestEntry{{Path: "Procfile", Type: api.EntryFile, Mode: 0o644, Size: int64(len(procfile)), SHA256: sum(procfile)}})
	if err != nil {
		t.Fatal(err)
	}
	if w := do(h, root, "POST", "/v1/uploads/"+u.ID+"/blobs", sum(procfile)+" 9\n"+procfile); w.Code != http.StatusNoContent {
		t.Fatalf("blobs: %d %s", w.Code, w.Body)
	}
	routes := []string{"/v1/apps/a/deploys", "/v1/apps/a/uploads/" + u.ID + "/deploy"}
	for _, route := range routes {
		for _, v := range []string{"0", "0%", "100", "100%", "-5", "ten", "1e1", "10%25%25", ".5", "%"} {
			w := do(h, root, "POST", route+"?canary="+url.QueryEscape(v), "x")
			var e api.Error
			json.Unmarshal(w.Body.Bytes(), &e)
			if w.Code != http.StatusBadRequest || e.Code != api.CodeBadRequest || !strings.Contains(e.Message, "bad canary") {
				t.Errorf("%s canary=%s: %d %s, want 400 bad canary", route, v, w.Code, w.Body)
			}
		}
	}
	// Nothing was made of the refused deploys.
	if w := do(h, root, "GET", "/v1/apps/a/releases", ""); strings.TrimSpace(w.Body.String()) != "[]" {
		t.Errorf("releases after refused canaries: %s", w.Body)
	}
	if u.Missing() != 0 {
		t.Errorf("the upload lost content: %d missing", u.Missing())
	}
	// A good share reaches the core: a stream with a result (app a has no
	// release and no steering, so it fails there, whatever the core says).
	for _, route := range routes {
		w := do(h, root, "POST", route+"?canary="+url.QueryEscape("10%"), "x")
		if w.Code != http.StatusOK || lastResult(t, w.Body) == nil {
			t.Errorf("%s canary=10%%: %d %s, want a stream with a result", route, w.Code, w.Body)
		}
	}
}

// TestCanaryRequests: promote and abort check their body and the app
// before a stream starts, then stream the core's answer.
func TestCanaryRequests(t *testing.T) {
	h := newServer(newAgent(t)).Handler()
	for _, route := range []string{"/v1/apps/a/promote", "/v1/apps/a/canary/abort"} {
		for _, body := range []string{`{"wait_drain_seconds":-1}`, `{"wait":1}`, `[]`, `{"wait_drain_seconds":"30s"}`} {
			if w := do(h, root, "POST", route, body); w.Code != http.StatusBadRequest {
				t.Errorf("%s %s: %d %s, want 400", route, body, w.Code, w.Body)
			}
		}
		ghost := strings.Replace(route, "/a/", "/ghost/", 1)
		if w := do(h, root, "POST", ghost, "{}"); w.Code != http.StatusNotFound || !strings.Contains(w.Body.String(), api.ReasonNoSuchApp) {
			t.Errorf("%s: %d %s, want 404 no such app", ghost, w.Code, w.Body)
		}
		for _, body := range []string{"", "{}", `{"wait_drain_seconds":90}`} {
			w := do(h, root, "POST", route, body)
			if w.Code != http.StatusOK || w.Header().Get("Content-Type") != "application/x-ndjson" {
				t.Fatalf("%s %q: %d %s, want a stream", route, body, w.Code, w.Body)
			}
			res := lastResult(t, w.Body)
			if res == nil || res.OK {
				t.Fatalf("%s on an app without a canary: %+v, want a failed result", route, res)
			}
			if res.Code == api.CodeInternal {
				t.Skipf("the core's canary is a stub yet: %s", res.Error)
			}
			if res.Reason != api.ReasonNoCanary {
				t.Errorf("%s on an app without a canary: %+v, want reason %s", route, res, api.ReasonNoCanary)
			}
		}
	}
}

// TestCanaryShowNone: GET canary of an app without one is a 404 that
// says so (ReasonNoCanary); of an unknown app, a 404 that says that.
func TestCanaryShowNone(t *testing.T) {
	h := newServer(newAgent(t)).Handler()
	w := do(h, root, "GET", "/v1/apps/a/canary", "")
	var e api.Error
	if err := json.Unmarshal(w.Body.Bytes(), &e); err != nil {
		t.Fatalf("%d %s: %v", w.Code, w.Body, err)
	}
	if e.Code == api.CodeInternal {
		t.Skipf("the core's canary is a stub yet: %s", e.Message)
	}
	if w.Code != http.StatusNotFound || e.Reason != api.ReasonNoCanary || e.App != "a" {
		t.Errorf("GET canary of an app without one: %d %s", w.Code, w.Body)
	}
	w = do(h, root, "GET", "/v1/apps/ghost/canary", "")
	if w.Code != http.StatusNotFound || !strings.Contains(w.Body.String(), api.ReasonNoSuchApp) {
		t.Errorf("GET canary of an unknown app: %d %s", w.Code, w.Body)
	}
}
