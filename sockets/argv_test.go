package sockets

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

func TestShellArgv(t *testing.T) {
	direct := map[string][]string{
		"./server":                    {"./server"},
		"./server --port 8080":        {"./server", "--port", "8080"},
		"  bin/web\t-w 4  --bind=:80": {"bin/web", "-w", "4", "--bind=:80"},
		"java -Xmx512m -jar app.jar":  {"java", "-Xmx512m", "-jar", "app.jar"},
		"gunicorn app:wsgi":           {"gunicorn", "app:wsgi"},
	}
	for cmd, want := range direct {
		if got := ShellArgv(cmd); !slices.Equal(got, want) {
			t.Errorf("ShellArgv(%q) = %q, want %q", cmd, got, want)
		}
	}
	shell := []string{
		"./server --port $PORT", "exec ./server", "cd app && ./server", "./a; ./b", "./a | ./b",
		"./a > log", "./a < in", "(./a)", "./a &", "echo `id`", "ls *.jar", "ls ?", "ls [ab]", "echo {a,b}",
		"ls ~", "./a # comment", "! ./a", "./a 'b c'", `./a "b c"`, `./a b\ c`, "./a\n./b",
		"FOO=bar ./server", "source env.sh", "ulimit -n 10", "", "   ",
	}
	for _, cmd := range shell {
		argv := ShellArgv(cmd)
		if len(argv) != 3 || argv[1] != "-c" || argv[2] != cmd || !strings.HasSuffix(argv[0], "sh") {
			t.Errorf("ShellArgv(%q) = %q, want a shell", cmd, argv)
		}
		if !NeedsShell(cmd) {
			t.Errorf("NeedsShell(%q) = false", cmd)
		}
	}
}

// Whatever ShellArgv execs directly, bash would have split into the very
// same words: running it without bash changes nothing but the cost.
func FuzzShellArgv(f *testing.F) {
	for _, s := range []string{"./server --port 8080", "a\tb  c", "x=y z", "a:b/c.d,e+f@g%h^", "ünïcode ok"} {
		f.Add(s)
	}
	bash, err := exec.LookPath("bash")
	if err != nil {
		f.Skip("no bash")
	}
	f.Fuzz(func(t *testing.T, cmd string) {
		argv, ok := directArgv(cmd)
		if !ok || strings.ContainsRune(cmd, 0) {
			return
		}
		// The command has no shell syntax, so it is safe to splice.
		out, err := exec.Command(bash, "-c", `set -- `+cmd+`; printf '%s\0' "$@"`).Output()
		if err != nil {
			t.Fatalf("bash: %v", err)
		}
		words := strings.Split(strings.TrimSuffix(string(out), "\x00"), "\x00")
		if !slices.Equal(words, argv) || !bytes.HasSuffix(out, []byte{0}) {
			t.Errorf("%q: ShellArgv %q, bash %q", cmd, argv, words)
		}
	})
}

// A direct argv really runs, with its arguments intact.
func TestShellArgvRuns(t *testing.T) {
	argv := ShellArgv("/bin/echo hello   world")
	out, err := exec.Command(argv[0], argv[1:]...).Output()
	if err != nil || string(out) != "hello world\n" {
		t.Errorf("%q: %q, %v", argv, out, err)
	}
}

// Through the shim, a direct command gets LISTEN_PID = its own PID, and an
// executable script without "#!" still runs (a shell takes it, as bash -c
// would have).
func TestShimDirectExec(t *testing.T) {
	for _, sh := range testShims(t) {
		t.Run(sh.Name, func(t *testing.T) { testShimDirectExec(t, sh.Path) })
	}
}

func testShimDirectExec(t *testing.T, shim string) {
	dir := t.TempDir()
	script := dir + "/noshebang"
	if err := os.WriteFile(script, []byte("echo \"pid=$$ listen=$LISTEN_PID args=$*\"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	argv := ShellArgv(script + " a b")
	if argv[0] != script {
		t.Fatalf("not direct: %q", argv)
	}
	cmd := exec.Command(shim, ShimArgv(shim, argv)[1:]...)
	cmd.Env = append(os.Environ(), "LISTEN_FDS=0")
	var out bytes.Buffer
	cmd.Stdout = &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("%v: %s", err, out.String())
	}
	want := fmt.Sprintf("pid=%d listen=%d args=a b\n", cmd.Process.Pid, cmd.Process.Pid)
	if out.String() != want {
		t.Errorf("got %q, want %q", out.String(), want)
	}
}

func TestShimBinary(t *testing.T) {
	dir := t.TempDir()
	exe := dir + "/agentd"
	if got := ShimBinary(exe); got != exe {
		t.Errorf("without agentd-shim: %s", got)
	}
	if err := os.WriteFile(dir+"/agentd-shim", nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if got := ShimBinary(exe); got != exe && os.Geteuid() != 0 {
		t.Errorf("with a non-executable agentd-shim: %s", got)
	}
	os.Chmod(dir+"/agentd-shim", 0o755)
	if got := ShimBinary(exe); got != dir+"/agentd-shim" {
		t.Errorf("with agentd-shim: %s", got)
	}
}
