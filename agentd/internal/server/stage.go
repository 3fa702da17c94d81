package server

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/agentd/agentd/agentd/api"
	"github.com/agentd/agentd/agentd/internal/store"
)

// stageFDs takes files handed over without hashes (api/stage.go) into a
// new stage, and answers with their hashes and the stage's id.
func (s *Server) stageFDs(w http.ResponseWriter, r *http.Request) {
	st, err := s.Agent.Store()
	if err != nil {
		uploadErr(w, err)
		return
	}
	s.takeFDs(w, r, func(uc *net.UnixConn) any {
		var res api.StageResult
		stage, err := st.NewStage()
		if err != nil {
			_, res.Error = uploadError(err)
			return res
		}
		t0 := time.Now()
		var mu sync.Mutex
		hashes := map[int]string{}
		res.FDResult = s.receiveFDs(uc, parseStageLine, func(f fdFrame) error {
			if err := regular(f); err != nil {
				return err
			}
			hash, kept, err := stage.Put(f.size, f.exec, f.mtimeNs, f.file)
			if err != nil {
				return fmt.Errorf("%s: %w", f.name(), err)
			}
			mu.Lock()
			defer mu.Unlock()
			hashes[f.seq] = hash
			if kept {
				res.Kept++
				res.KeptBytes += f.size
			}
			return nil
		})
		if res.Error == nil {
			n, b, err := stage.Finish()
			res.Kept += int64(n)
			res.KeptBytes += b
			if err != nil {
				_, res.Error = uploadError(err)
			}
		}
		s.Log.Debug("upload: staged files read", "stage", stage.ID, "files", res.Files, "kept", res.Kept, "bytes", res.Bytes, "took", time.Since(t0), "err", res.Error)
		if res.Error != nil {
			stage.Forget()
			return res
		}
		res.Stage = stage.ID
		res.Hashes = make([]string, len(hashes))
		for i := range res.Hashes {
			res.Hashes[i] = hashes[i]
		}
		return res
	})
}

// parseStageLine reads a staged file's line "SIZE MODE MTIME_NS" (its
// newline removed): MODE in octal, as the manifest's.
func parseStageLine(line string) (fdFrame, error) {
	bad := fmt.Errorf("%w: staged file line %q: want \"SIZE MODE MTIME_NS\"", store.ErrInvalid, line)
	f := strings.Fields(line)
	if len(f) != 3 {
		return fdFrame{}, bad
	}
	size, err1 := strconv.ParseInt(f[0], 10, 64)
	mode, err2 := strconv.ParseUint(f[1], 8, 32)
	mtime, err3 := strconv.ParseInt(f[2], 10, 64)
	if err1 != nil || err2 != nil || err3 != nil || size < 0 {
		return fdFrame{}, bad
	}
	return fdFrame{size: size, exec: mode&0o111 != 0, mtimeNs: mtime}, nil
}

// namedStage returns the stage a manifest names, settled: what it kept
// is synced and named in blobs/, for the upload to find. A stage agentd
// no longer holds (forgotten, or staged before a restart) is as none
// (nil): the upload's answer then lists those files, and the client hands
// them over as usual.
func namedStage(st *store.Store, id string) (*store.Stage, error) {
	if id == "" {
		return nil, nil
	}
	stage, err := st.Stage(id)
	if errors.Is(err, store.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	if err := stage.Settle(); err != nil {
		stage.Forget()
		return nil, err
	}
	return stage, nil
}

// adoptStage ends the stage for the new upload u, which takes what it
// still lacks from it, and leaves in res only what is still to come.
func adoptStage(u *store.Upload, stage *store.Stage, res *api.UploadCreated) error {
	adopted, bytes, err := u.Adopt(stage)
	res.Missing = slices.DeleteFunc(res.Missing, func(h string) bool { return adopted[h] })
	res.MissingBytes -= bytes
	return err
}
