package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"fmt"
	"os"
	"strconv"
	"time"
)

// artifact writes release artifacts (.tar.gz, what `hctl deploy` takes and
// what a CI pipeline would hand over) that differ only in a VERSION file.
// The large part, the app's binary and the Procfile, is compressed once:
// gzip allows several members one after the other in one stream (RFC 1952;
// Go's reader, and so agentd, reads them as one), so each release is that
// member followed by a small one with VERSION and the tar's end. Packing a
// 9 MB binary for each of hundreds of deploys would otherwise spend the
// CPU the load and the switch are measured on.
type artifact struct {
	path string
	head []byte // gzip member: tar entries for the binary and the Procfile, no end marker
}

func newArtifact(path, procfile, binName, binPath string) (*artifact, error) {
	bin, err := os.ReadFile(binPath)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	zw, err := gzip.NewWriterLevel(&buf, gzip.BestSpeed)
	if err != nil {
		return nil, err
	}
	tw := tar.NewWriter(zw)
	now := time.Now()
	for _, f := range []struct {
		name string
		mode int64
		data []byte
	}{{"Procfile", 0o644, []byte(procfile)}, {binName, 0o755, bin}} {
		if err := tw.WriteHeader(&tar.Header{Name: f.name, Typeflag: tar.TypeReg, Mode: f.mode, Size: int64(len(f.data)), ModTime: now}); err != nil {
			return nil, err
		}
		if _, err := tw.Write(f.data); err != nil {
			return nil, err
		}
	}
	// Pad the last entry, but do not end the archive: the second member
	// continues it.
	if err := tw.Flush(); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return &artifact{path: path, head: buf.Bytes()}, nil
}

// write writes the artifact of release i and returns its path.
func (a *artifact) write(i int) (string, error) {
	return a.writeAs(a.path+".tar.gz", strconv.Itoa(i))
}

// writeAs writes an artifact whose VERSION file holds version to path.
func (a *artifact) writeAs(path, version string) (string, error) {
	var buf bytes.Buffer
	buf.Write(a.head)
	zw, err := gzip.NewWriterLevel(&buf, gzip.BestSpeed)
	if err != nil {
		return "", err
	}
	tw := tar.NewWriter(zw)
	v := []byte(version + "\n")
	if err := tw.WriteHeader(&tar.Header{Name: "VERSION", Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(v)), ModTime: time.Now()}); err != nil {
		return "", err
	}
	if _, err := tw.Write(v); err != nil {
		return "", err
	}
	if err := tw.Close(); err != nil {
		return "", err
	}
	if err := zw.Close(); err != nil {
		return "", err
	}
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		return "", fmt.Errorf("artifact: %w", err)
	}
	return path, nil
}
