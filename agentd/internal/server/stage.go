package server

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strconv"
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
			hash, kept, err := stage.Put(f.size, f.file)
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

// parseStageLine reads a staged file's line "SIZE" (its newline removed).
func parseStageLine(line string) (string, int64, error) {
	size, err := strconv.ParseInt(line, 10, 64)
	if err != nil || size < 0 {
		return "", 0, fmt.Errorf("%w: staged file line %q: want \"SIZE\"", store.ErrInvalid, line)
	}
	return "", size, nil
}

// adoptStage takes into the new upload u what it lacks from the stage its
// manifest names, and leaves in res only what is still to come. A stage
// agentd no longer holds (forgotten, or staged before a restart) is as
// none: the client then hands over what res lists.
func adoptStage(st *store.Store, u *store.Upload, id string, res *api.UploadCreated) error {
	stage, err := st.Stage(id)
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	adopted, bytes, err := u.Adopt(stage)
	res.Missing = slices.DeleteFunc(res.Missing, func(h string) bool { return adopted[h] })
	res.MissingBytes -= bytes
	return err
}
