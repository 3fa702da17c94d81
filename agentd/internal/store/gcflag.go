package store

// Most Collects after a deploy find no garbage among the blobs, yet the
// blob pass reads every content's directory and stats every blob (4.7 ms
// for a store of two 256-file releases, more as the store grows). A blob
// only becomes garbage when a link to it goes, and every place that
// removes links to blobs in this process says so (maybeGarbage); a Collect
// that finds nothing said since its last complete blob pass, and removes
// no tree itself, skips the pass.
//
// The places, each calling maybeGarbage once its removal is done (never
// before: a Collect that clears the flag must then see the link gone):
//   - Open: a crash or a stop may have left anything (and Open removes the
//     scratch directories of dead processes, with their links);
//   - Collect, after removing a tree or a private copy;
//   - build, when its scratch tree is removed instead of renamed into
//     trees/ (a failure, a tree that was there already);
//   - a prelinked scratch tree given up (an upload aborted or expired);
//   - an upload's or an import's scratch directory removed when the blobs
//     adopted from it are not all linked by the tree build placed (build
//     failed, or kept another process's tree);
//   - a blob pass that failed, or that kept a blob with no other link only
//     because an upload pinned it: the upload may end without linking it.
//
// What another process does to the store (the agentd being upgraded from
// finishing an import) does not set it: that can leak a blob until the
// next tree removal or the next start, never remove one still linked,
// since the pass itself decides as before.

// maybeGarbage records that a link to a blob may have gone: the next
// Collect walks every blob.
func (s *Store) maybeGarbage() { s.garbage.Store(true) }
