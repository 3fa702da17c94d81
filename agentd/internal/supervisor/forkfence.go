package supervisor

import "sync"

// forks is read-held across every fork agentd makes and until the child
// has exec'd (syscall.ForkExec and exec.Cmd.Start return only then).
//
// A child forked while agentd holds a file open for writing inherits that
// descriptor until its exec closes it (O_CLOEXEC), and while it holds it
// the kernel refuses to exec that file (ETXTBSY). Unpacking a release
// writes the very files its processes exec next, while other apps'
// processes are being started: ForkFence, called once the files are
// closed, waits out every fork that could have caught one of them.
var forks sync.RWMutex

// Fork runs start, which forks and execs one child, inside the fence.
func Fork(start func() error) error {
	forks.RLock()
	defer forks.RUnlock()
	return start()
}

// ForkFence returns once every fork that began before it has exec'd.
func ForkFence() {
	forks.Lock()
	//lint:ignore SA2001 an empty critical section is the point: a fence.
	forks.Unlock()
}
