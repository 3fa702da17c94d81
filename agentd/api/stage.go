package api

import (
	"context"
	"errors"
	"fmt"
)

// Staging files before the manifest (POST /v1/stages, Upgrade:
// agentd-fds): a client that has no hash for some files (a fresh build,
// a cold hash cache) hands them over as open files without one, instead
// of reading them to hash them before agentd reads them again. agentd
// reads each once, keeps the contents it lacks, and answers with every
// file's sha256. The client then sends the whole manifest with
// UploadManifest.Stage set, and the upload takes what it lacks from the
// stage: its answer lists only what is still missing.
//
// The exchange is the one of blobfds.go, with lines of "SIZE MODE
// MTIME_NS\n" (MODE in octal; the mode and mtime its manifest entry will
// give, which agentd sets on what it keeps at once): the answer is one
// line of StageResult. A stage no manifest names is
// forgotten after a while; a manifest that names a stage agentd no longer
// holds (it restarted meanwhile) is taken as naming none, and its answer
// lists the files to hand over as usual.

// StageFile is a file to stage: where it is, and the size, mode and mtime
// its manifest entry will give.
type StageFile struct {
	Path    string
	Size    int64
	Mode    uint32
	MTimeNs int64
}

// StageResult is agentd's one-line answer to staged files.
type StageResult struct {
	FDResult
	Stage string `json:"stage"`
	// Hashes: each file's sha256, in the order handed over.
	Hashes []string `json:"hashes"`
	// Kept and KeptBytes: the files whose content agentd lacked (the rest
	// it holds already, and read only to hash).
	Kept      int64 `json:"kept"`
	KeptBytes int64 `json:"kept_bytes"`
}

// StageFiles hands agentd the files as open descriptors, without hashes,
// and returns their hashes and the stage that keeps what agentd lacked.
// It returns [ErrFDsUnsupported] when agentd cannot take them (no such
// route, or a socket that carries no descriptors): the caller then
// hashes the files itself.
func (c *Client) StageFiles(ctx context.Context, files []StageFile) (*StageResult, error) {
	ff := make([]fdFile, len(files))
	for i, f := range files {
		ff[i] = fdFile{line: fmt.Sprintf("%d %o %d\n", f.Size, f.Mode, f.MTimeNs), path: f.Path}
	}
	var res StageResult
	err := c.fdExchange(ctx, "/v1/stages", ff, &res)
	if ae := (*Error)(nil); errors.As(err, &ae) && ae.Code == CodeNotFound {
		// The route is the only thing here that can be missing.
		return nil, fmt.Errorf("%w: %w", ErrFDsUnsupported, err)
	}
	if err != nil {
		return nil, err
	}
	return &res, nil
}
