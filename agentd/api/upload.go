package api

// Manifest-first upload of a directory (the fast path of `hctl deploy DIR`):
//
//	POST   /v1/stages                           Upgrade: agentd-fds, open files without hashes (stage.go)
//	POST   /v1/uploads                          UploadManifest -> UploadCreated
//	POST   /v1/uploads/{id}/fds                 Upgrade: agentd-fds, then open files (blobfds.go)
//	POST   /v1/uploads/{id}/blobs               body: "SHA256 SIZE\n" + bytes, per file -> 204 (blobstream.go)
//	DELETE /v1/uploads/{id}                     -> 204 (forget it; nothing else changes)
//	POST   /v1/apps/{app}/uploads/{id}/deploy?message=&skip_release_phase=1&release_id=
//	                                            -> event stream, as POST /v1/apps/{app}/deploys
//
// The client sends the tree's manifest; agentd answers with the content
// hashes it has no copy of; the client hands over those files alone (as
// open files, or as their bytes where the socket cannot carry them); the deploy
// then builds the release from agentd's store. An agentd without the
// routes answers 404 to the first request, and the client falls back to
// the .tar.gz upload.

// Manifest entry types.
const (
	EntryDir     = "dir"
	EntryFile    = "file"
	EntrySymlink = "symlink"
)

// ManifestEntry is one entry of a release tree. Paths are relative and
// slash-separated, as in a tar archive; the same rules apply (no absolute
// paths, nothing climbing out, symlinks relative and resolving inside).
type ManifestEntry struct {
	Path string `json:"path"`
	Type string `json:"type"` // EntryDir, EntryFile or EntrySymlink
	// Mode: the permission bits. agentd keeps only whether any executable
	// bit is set (files become 0555 or 0444) and refuses setuid, setgid and
	// sticky bits.
	Mode uint32 `json:"mode,omitempty"`
	// Size, SHA256 (lowercase hex of the content) and MTimeNs (the mtime in
	// nanoseconds since the epoch, kept in the release) are for files.
	Size    int64  `json:"size,omitempty"`
	SHA256  string `json:"sha256,omitempty"`
	MTimeNs int64  `json:"mtime_ns,omitempty"`
	Target  string `json:"target,omitempty"` // for symlinks
}

// UploadManifest is the body of POST /v1/uploads.
type UploadManifest struct {
	Entries []ManifestEntry `json:"entries"`
	// Stage: the id of files staged for this upload (stage.go), whose
	// contents it takes instead of listing them as missing.
	Stage string `json:"stage,omitempty"`
}

// UploadCreated answers POST /v1/uploads: the upload's id and the content
// hashes agentd lacks, each to be sent once with PUT.
type UploadCreated struct {
	ID           string   `json:"id"`
	Missing      []string `json:"missing"`
	MissingBytes int64    `json:"missing_bytes"`
	Files        int      `json:"files"` // regular files in the manifest
	Bytes        int64    `json:"bytes"` // their total size
}

// StoreUsage is what the release store holds (part of `hctl status`).
type StoreUsage struct {
	Bytes       int64 `json:"bytes"`       // blobs and private copies, each inode counted once
	Reclaimable int64 `json:"reclaimable"` // what a collection would free now
	Blobs       int   `json:"blobs"`
	Trees       int   `json:"trees"`
}
