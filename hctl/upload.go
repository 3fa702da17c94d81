package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/agentd/agentd/agentd/api"
)

// dirUpload is a directory scanned for a manifest-first upload.
type dirUpload struct {
	dir, root string
	cache     *hashCache
	manifest  *api.UploadManifest
	files     []scannedFile
	// scanned is how long the scan and hctl's own hashing took: shown,
	// so a user sees where a slow deploy spent its time.
	scanned time.Duration
	// saved is the hash cache's write, started once agentd accepted the
	// manifest (nil before): see finish.
	saved chan error
}

// finish waits for the hash cache's write, which runs beside the upload
// and the deploy rather than before them; failing to save only costs the
// next deploy a full read, so it is a warning.
func (d *dirUpload) finish(stderr io.Writer) {
	if d.saved == nil {
		return
	}
	if err := <-d.saved; err != nil {
		fmt.Fprintf(stderr, "       (hash cache not saved: %v)\n", err)
	}
	d.saved = nil
}

// scanDirUpload reads dir for an upload; its errors are the user's (a
// special file, a symlink out of the tree). Files the hash cache does not
// know are left unhashed: see hashRest.
func scanDirUpload(dir string) (*dirUpload, error) {
	t0 := time.Now()
	// The cache is read while the tree is listed: two jobs for two cores.
	loaded := make(chan *hashCache, 1)
	go func() { loaded <- loadHashCache() }()
	d := &dirUpload{dir: dir}
	cacheOf := func() *hashCache {
		if d.cache == nil {
			d.cache = <-loaded
		}
		return d.cache
	}
	var err error
	d.manifest, d.files, d.root, err = scanManifest(dir, cacheOf)
	cacheOf() // also when the listing failed: nothing left running
	d.scanned = time.Since(t0)
	return d, err
}

// unhashed are the files whose hash is still unknown.
func (d *dirUpload) unhashed() []scannedFile {
	var out []scannedFile
	for _, f := range d.files {
		if d.manifest.Entries[f.entry].SHA256 == "" {
			out = append(out, f)
		}
	}
	return out
}

// hashRest fills in the hashes the cache did not know. On agentd's own
// socket, agentd reads those files as open files handed over without a
// hash (a stage): each is read once, by agentd, instead of once here to
// hash it and again by agentd if it lacks it. Elsewhere (a socket that
// carries no descriptors, an agentd without stages) hctl hashes them. It
// returns how many of the files, and bytes, agentd kept.
func (h *hctl) hashRest(ctx context.Context, d *dirUpload) (int, int64, error) {
	todo := d.unhashed()
	if len(todo) == 0 {
		return 0, 0, nil
	}
	if small(todo) {
		return 0, 0, d.hashHere(todo)
	}
	files := make([]api.StageFile, len(todo))
	for i, f := range todo {
		files[i] = api.StageFile{Path: f.path, Size: f.st.Size, Mode: f.st.Mode & 0o777, MTimeNs: f.st.Mtim.Nano()}
	}
	began := time.Now()
	res, err := h.client().StageFiles(ctx, files)
	if errors.Is(err, api.ErrFDsUnsupported) {
		return 0, 0, d.hashHere(todo)
	}
	if err != nil {
		return 0, 0, err
	}
	if len(res.Hashes) != len(todo) {
		return 0, 0, fmt.Errorf("agentd staged %d files and named %d hashes", len(todo), len(res.Hashes))
	}
	for i, f := range todo {
		d.manifest.Entries[f.entry].SHA256 = res.Hashes[i]
		d.cache.record(f.path, &f.st, res.Hashes[i], began, f.st.Size)
	}
	d.manifest.Stage = res.Stage
	return int(res.Kept), res.KeptBytes, nil
}

// hashHere hashes files in hctl, its time counted as the scan's.
func (d *dirUpload) hashHere(files []scannedFile) error {
	t0 := time.Now()
	err := hashFiles(d.manifest, files, d.cache)
	d.scanned += time.Since(t0)
	if err != nil {
		return fmt.Errorf("reading %s: %w", d.dir, err)
	}
	return nil
}

// hashHereBytes is how much unhashed content hctl hashes itself rather than
// stage: a file or two changed since the last deploy. Hashing 2 MiB here
// costs about what the stage's own round trip does (a connection, the
// hand-over, agentd's answer), and the manifest then goes first: agentd
// links the release's unchanged files into its new tree while the changed
// ones are sent and synced, where after a stage it links them only once
// the stage is done. Above it, reading the files once (agentd's read)
// beats reading them twice.
const hashHereBytes = 2 << 20

func small(files []scannedFile) bool {
	var n int64
	for _, f := range files {
		if n += f.st.Size; n > hashHereBytes {
			return false
		}
	}
	return true
}

// upload runs the manifest-first upload of a directory: the manifest,
// then only the contents agentd lacks, uncompressed. It returns the
// upload's id, or "" when agentd cannot take such an upload (the caller
// then sends a .tar.gz, as before).
func (h *hctl) upload(ctx context.Context, app string, d *dirUpload) (string, error) {
	t0, scanned := time.Now(), d.scanned
	staged, stagedBytes, err := h.hashRest(ctx, d)
	if err != nil {
		return "", refused(app, err)
	}
	// hctl's own reading, if it hashed the files, is the scan's time, not
	// the upload's: the two figures add up.
	t0 = t0.Add(d.scanned - scanned)
	dir, m, root, cache := d.dir, d.manifest, d.root, d.cache
	blobs := blobRefs(m, d.files)
	c := h.client()
	res, err := c.CreateUpload(ctx, m)
	if errors.Is(err, api.ErrUploadUnsupported) {
		// An older agentd: the .tar.gz works as it always did, so say
		// nothing (prepare's line says what happened).
		return "", nil
	}
	if err != nil {
		return "", refused(app, err)
	}
	// The cache is saved once agentd accepted the manifest (its hashes
	// were worth keeping), while the contents are sent and the release
	// deployed: not in the way. The caller waits for it (finish).
	saved := make(chan error, 1)
	d.saved = saved
	go func() { saved <- cache.save(root) }()
	send := make([]api.BlobRef, 0, len(res.Missing))
	for _, hsh := range res.Missing {
		b, ok := blobs[hsh]
		if !ok {
			c.AbortUpload(ctx, res.ID)
			return "", fmt.Errorf("agentd asked for content %s that %s does not hold", hsh, dir)
		}
		send = append(send, b)
	}
	slices.SortFunc(send, func(a, b api.BlobRef) int { return strings.Compare(a.Path, b.Path) })
	sent, err := handOver(ctx, c, res.ID, send)
	if err != nil {
		c.AbortUpload(context.WithoutCancel(ctx), res.ID)
		return "", refused(app, fmt.Errorf("sending %s: %w", dir, err))
	}
	files, bytes := 0, int64(0)
	for _, e := range m.Entries {
		if e.Type == api.EntryFile {
			files++
			bytes += e.Size
		}
	}
	// Staged files agentd kept were sent as surely as handed-over ones.
	by := ""
	if m.Stage != "" {
		by = ", as agentd read them"
	}
	fmt.Fprintf(h.stderr, "-----> upload: sent %d of %d files (%s of %s) in %s; hashed %d files (%s) in %s%s\n",
		staged+len(send), files, sizeStr(stagedBytes+sent), sizeStr(bytes), durStr(time.Since(t0)), cache.hashed, sizeStr(cache.read), durStr(d.scanned), by)
	return res.ID, nil
}

// sizeStr is a byte count for people: "0 B", "12.3 MB".
func sizeStr(n int64) string {
	const unit = 1000
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %cB", float64(n)/float64(div), "kMGTPE"[exp])
}

// durStr is a short duration for people: "850µs", "12ms", "1.25s".
func durStr(d time.Duration) string {
	switch {
	case d < time.Millisecond:
		return d.Round(time.Microsecond).String()
	case d < time.Second:
		return d.Round(time.Millisecond).String()
	}
	return d.Round(10 * time.Millisecond).String()
}

// refused makes agentd's refusal of the content (too large, a path out of
// the tree, a lying manifest) a failed deploy, exit 1, as the same
// refusal of a .tar.gz is.
func refused(app string, err error) error {
	var ae *api.Error
	if errors.As(err, &ae) && ae.Code == api.CodeBadRequest {
		return &opError{msg: fmt.Sprintf("deploy of %s failed: %s; nothing running was touched", app, ae.Message), code: ae.Code}
	}
	return err
}

// handOver gives agentd the contents as open files, which it reads
// itself; where that cannot be done (an agentd without the route, a socket
// forwarded over ssh), it sends their bytes.
func handOver(ctx context.Context, c *api.Client, id string, blobs []api.BlobRef) (int64, error) {
	if len(blobs) == 0 {
		return 0, nil
	}
	sent, err := c.HandOverBlobs(ctx, id, blobs)
	if errors.Is(err, api.ErrFDsUnsupported) {
		return sendParallel(ctx, c, id, blobs)
	}
	return sent, err
}

// sendParallel sends the contents over one connection per core: agentd
// hashes and writes what each connection brings on its own goroutine.
func sendParallel(ctx context.Context, c *api.Client, id string, blobs []api.BlobRef) (int64, error) {
	n := min(runtime.GOMAXPROCS(0), len(blobs))
	if n <= 1 {
		return c.SendBlobs(ctx, id, blobs)
	}
	// Deal the contents out largest first, each to the lightest stream.
	parts := make([][]api.BlobRef, n)
	load := make([]int64, n)
	bySize := slices.Clone(blobs)
	slices.SortStableFunc(bySize, func(a, b api.BlobRef) int { return cmp.Compare(b.Size, a.Size) })
	for _, b := range bySize {
		i := slices.Index(load, slices.Min(load))
		parts[i] = append(parts[i], b)
		load[i] += b.Size
	}
	sent := make([]int64, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range parts {
		wg.Go(func() { sent[i], errs[i] = c.SendBlobs(ctx, id, parts[i]) })
	}
	wg.Wait()
	var total int64
	for _, s := range sent {
		total += s
	}
	return total, errors.Join(errs...)
}
