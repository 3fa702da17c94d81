package server

import (
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"strings"
	"testing"

	"github.com/agentd/agentd/agentd/api"
)

func sum(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}

// The content of an upload arrives as frames "SHA256 SIZE\n" + bytes;
// bytes that lie about their hash, malformed frames and unknown uploads
// are refused with a 4xx, and only the admin may send.
func TestUploadBlobs(t *testing.T) {
	ag := newAgent(t)
	h := newServer(ag).Handler()
	st, err := ag.Store()
	if err != nil {
		t.Fatal(err)
	}
	body := "web: ./x\n"
	other := "other content"
	u, res, err := st.NewUpload([]api.ManifestEntry{
		{Path: "Procfile", Type: api.EntryFile, Mode: 0o644, Size: int64(len(body)), SHA256: sum(body)},
		{Path: "o", Type: api.EntryFile, Mode: 0o644, Size: int64(len(other)), SHA256: sum(other)},
	})
	if err != nil || len(res.Missing) != 2 {
		t.Fatalf("%+v %v", res, err)
	}
	path := "/v1/uploads/" + u.ID + "/blobs"
	cases := []struct {
		name, body string
		want       int
	}{
		{"lying bytes", sum(body) + " 9\nweb: ./y\n", http.StatusBadRequest},
		{"short", sum(body) + " 9\nweb:", http.StatusBadRequest},
		{"no size", sum(body) + "\n" + body, http.StatusBadRequest},
		{"negative size", sum(body) + " -1\n", http.StatusBadRequest},
		{"unasked content", sum("x") + " 1\nx", http.StatusBadRequest},
	}
	for _, c := range cases {
		if w := do(h, root, "POST", path, c.body); w.Code != c.want {
			t.Errorf("%s: %d %s, want %d", c.name, w.Code, w.Body, c.want)
		}
	}
	if u.Missing() != 2 {
		t.Errorf("refused frames changed the upload: %d missing", u.Missing())
	}
	if w := do(h, stranger, "POST", path, sum(body)+" 9\n"+body); w.Code != http.StatusForbidden {
		t.Errorf("stranger: %d", w.Code)
	}
	frames := sum(body) + " 9\n" + body + sum(other) + " 13\n" + other
	if w := do(h, root, "POST", path, frames); w.Code != http.StatusNoContent {
		t.Fatalf("two honest frames: %d %s", w.Code, w.Body)
	}
	if u.Missing() != 0 {
		t.Errorf("%d still missing", u.Missing())
	}
	if w := do(h, root, "DELETE", "/v1/uploads/"+u.ID, ""); w.Code != http.StatusNoContent {
		t.Errorf("abort: %d", w.Code)
	}
	for _, p := range []string{path, "/v1/uploads/nope/blobs"} {
		if w := do(h, root, "POST", p, frames); w.Code != http.StatusNotFound || !strings.Contains(w.Body.String(), "not found") {
			t.Errorf("%s after abort: %d %s", p, w.Code, w.Body)
		}
	}
	if w := do(h, root, "POST", "/v1/apps/a/uploads/nope/deploy", ""); w.Code != http.StatusNotFound {
		t.Errorf("deploy of an unknown upload: %d", w.Code)
	}
}
