package agent

import (
	"os"
	"os/user"
	"sync"
	"syscall"
	"time"
)

// Every process start looked its app's user up three times (its
// environment, its data directory, its credential) and its groups once:
// four reads of /etc/passwd and /etc/group, about 0.2 ms of a start here.
// users keeps what they gave for as long as neither file changes. agentd
// is built without cgo, so os/user reads only these two files: a change
// of either (an edit in place, or a new file renamed over it, as useradd
// does) shows in its stamp and drops everything cached.
var users struct {
	mu     sync.Mutex
	stamps [2]fileStamp
	byName map[string]cachedUser
}

type cachedUser struct {
	u      *user.User
	groups []uint32
}

var userFiles = [2]string{"/etc/passwd", "/etc/group"}

// fileStamp tells one version of a file from another: a rename changes
// the inode, a write the size or the times.
type fileStamp struct {
	exists       bool
	ino          uint64
	size         int64
	mtime, ctime time.Time
}

func stampOf(path string) fileStamp {
	fi, err := os.Stat(path)
	if err != nil {
		return fileStamp{}
	}
	st := fileStamp{exists: true, size: fi.Size(), mtime: fi.ModTime()}
	if s, ok := fi.Sys().(*syscall.Stat_t); ok {
		st.ino = s.Ino
		st.ctime = time.Unix(s.Ctim.Unix())
	}
	return st
}

// cachedLookup is user.Lookup and the user's groups (userGroups), from
// the cache while /etc/passwd and /etc/group are unchanged. The *user.User
// is shared: callers only read it. Failures are not cached.
func cachedLookup(name string) (*user.User, []uint32, error) {
	stamps := [2]fileStamp{stampOf(userFiles[0]), stampOf(userFiles[1])}
	users.mu.Lock()
	if users.stamps != stamps {
		users.stamps, users.byName = stamps, nil
	}
	c, ok := users.byName[name]
	users.mu.Unlock()
	if ok {
		return c.u, c.groups, nil
	}
	u, err := user.Lookup(name)
	if err != nil {
		return nil, nil, err
	}
	c = cachedUser{u: u, groups: userGroups(u)}
	users.mu.Lock()
	// Only into the cache of the files it was read from.
	if users.stamps == stamps {
		if users.byName == nil {
			users.byName = map[string]cachedUser{}
		}
		users.byName[name] = c
	}
	users.mu.Unlock()
	return c.u, c.groups, nil
}
