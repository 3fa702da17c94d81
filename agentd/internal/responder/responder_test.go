package responder

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestHandlerAnswers503WithThePage(t *testing.T) {
	srv := httptest.NewServer(Handler([]byte("<h1>later</h1>"), 120))
	defer srv.Close()
	for _, method := range []string{http.MethodGet, http.MethodPost, http.MethodHead} {
		req, err := http.NewRequest(method, srv.URL+"/any/path?q=1", strings.NewReader(strings.Repeat("x", 4096)))
		if err != nil {
			t.Fatal(err)
		}
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") != "120" {
			t.Errorf("%s: %s, Retry-After %q; want 503 and 120", method, resp.Status, resp.Header.Get("Retry-After"))
		}
		want := "<h1>later</h1>"
		if method == http.MethodHead {
			want = ""
		}
		if string(body) != want {
			t.Errorf("%s: body %q, want %q", method, body, want)
		}
		if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/html") {
			t.Errorf("%s: Content-Type %q", method, ct)
		}
	}
}

func TestDefaultPage(t *testing.T) {
	if !strings.Contains(string(Default), "maintenance") {
		t.Errorf("the built-in page does not say maintenance: %q", Default)
	}
}

func TestRefusesToRunOutsideAgentd(t *testing.T) {
	t.Setenv("LISTEN_PID", "1")
	t.Setenv("LISTEN_FDS", "1")
	if _, _, err := listeners(); err == nil || !strings.Contains(err.Error(), "LISTEN_PID") {
		t.Errorf("listeners with another LISTEN_PID: %v", err)
	}
}
