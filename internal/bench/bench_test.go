package main

// These test the benchmark's own helpers (parsers, statistics, the
// artifact writer) in milliseconds. The benchmark itself runs only with
// `make bench`, never under `go test`.

import (
	"archive/tar"
	"compress/gzip"
	"io"
	"os"
	"path/filepath"
	"testing"
)

func TestStat(t *testing.T) {
	for _, c := range []struct {
		in   []float64
		want Stat
	}{
		{nil, Stat{}},
		{[]float64{3}, Stat{Median: 3, Min: 3, Max: 3, N: 1}},
		{[]float64{5, 1, 3}, Stat{Median: 3, Min: 1, Max: 5, N: 3}},
		{[]float64{4, 1, 2, 3}, Stat{Median: 2.5, Min: 1, Max: 4, N: 4}},
		{[]float64{1, ratio(1, 0), 3}, Stat{Median: 2, Min: 1, Max: 3, N: 2}},
	} {
		if got := stat(c.in); got != c.want {
			t.Errorf("stat(%v) = %+v, want %+v", c.in, got, c.want)
		}
	}
	if got := (Stat{Median: 0.002, Min: 0.001, Max: 0.0125, N: 3}).format(fmtDur); got != "2.00 ms [1.00 ms–12.5 ms]" {
		t.Errorf("format = %q", got)
	}
	if got := (Stat{}).format(fmtDur); got != "–" {
		t.Errorf("format of nothing = %q", got)
	}
}

func TestParseWrk(t *testing.T) {
	const out = `Running 30s test @ http://127.0.0.1:1/
  1 threads and 2 connections
  83413 requests in 2.00s, 9.47MB read
  Socket errors: connect 1, read 2, write 30, timeout 4
  Non-2xx or 3xx responses: 5
Requests/sec:  41706.00
`
	var w crossWindow
	parseWrk(out, &w)
	if w.Requests != 83413 || w.Errors != 37 || w.Non2xx != 5 || w.Error != "" {
		t.Errorf("parseWrk = %+v", w)
	}
	w = crossWindow{}
	parseWrk("  10 requests in 1.00s, 1KB read\n", &w)
	if w.Requests != 10 || w.Errors != 0 || w.Detail != "no socket errors" {
		t.Errorf("parseWrk clean = %+v", w)
	}
}

func TestParseHey(t *testing.T) {
	const out = `
Summary:
  Total:	1.9899 secs

Status code distribution:
  [200]	1200 responses
  [502]	3 responses

Error distribution:
  [28]	Post "http://127.0.0.1:1/": dial tcp 127.0.0.1:1: connect: connection refused
  [2]	Post "http://127.0.0.1:1/": read tcp 127.0.0.1:2->127.0.0.1:1: read: connection reset by peer
  [1]	Post "http://127.0.0.1:1/": write tcp 127.0.0.1:3->127.0.0.1:1: write: connection reset by peer
`
	var w crossWindow
	parseHey(out, &w)
	if w.Requests != 1234 || w.Non2xx != 3 || w.Errors != 31 || w.Error != "" {
		t.Errorf("parseHey = %+v", w)
	}
	if w.Detail != "28× connection refused, 3× connection reset" {
		t.Errorf("detail = %q", w.Detail)
	}
}

func TestParseStatusTimes(t *testing.T) {
	i, r := parseStatusTimes("serving init=100 ready=250")
	if i != 100 || r != 250 {
		t.Errorf("got %d %d", i, r)
	}
	var p appProc
	if !parseReady("READY=1\nSTATUS=serving init=1 ready=2", &p) || p.initNS != 1 || p.readyNS != 2 {
		t.Errorf("parseReady: %+v", p)
	}
	if parseReady("STOPPING=1", &p) {
		t.Error("STOPPING=1 taken for READY=1")
	}
}

// TestArtifactReadsAsOneArchive checks that the two-member artifact reads
// as one tar archive through Go's gzip reader (multistream by default),
// which is what agentd's unpacker uses.
func TestArtifactReadsAsOneArchive(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "app")
	if err := os.WriteFile(bin, []byte("#!/bin/sh\necho hi\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	a, err := newArtifact(filepath.Join(dir, "art"), "web: ./app\n", "app", bin)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range []string{"1", "2"} {
		n := int(v[0] - '0')
		p, err := a.write(n)
		if err != nil {
			t.Fatal(err)
		}
		f, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		zr, err := gzip.NewReader(f)
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]string{}
		tr := tar.NewReader(zr)
		for {
			h, err := tr.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(tr)
			got[h.Name] = string(b)
			if h.Name == "app" && h.Mode&0o100 == 0 {
				t.Errorf("app not executable: %o", h.Mode)
			}
		}
		// The end of the gzip stream verifies both members' checksums.
		if rest, err := io.ReadAll(zr); err != nil || len(rest) != 0 {
			t.Errorf("after the archive: %d bytes, %v", len(rest), err)
		}
		f.Close()
		want := map[string]string{"Procfile": "web: ./app\n", "app": "#!/bin/sh\necho hi\n", "VERSION": v + "\n"}
		if len(got) != len(want) {
			t.Errorf("entries %v, want %v", got, want)
		}
		for k, w := range want {
			if got[k] != w {
				t.Errorf("%s = %q, want %q", k, got[k], w)
			}
		}
	}
}
