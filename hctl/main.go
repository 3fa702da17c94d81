// Command hctl is the command-line client of agentd: it creates apps,
// deploys releases without downtime, rolls back, scales, restarts, changes
// config and shows processes and logs. Every call goes through the control
// API in package api.
//
// Exit status: 0 on success (also when there was nothing to do), 1 when an
// operation failed (a failed deploy leaves the old release serving), 2 on
// bad usage or when agentd cannot be reached.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"github.com/agentd/agentd/agentd/api"
	"github.com/urfave/cli/v3"
)

// version is set at build time with -ldflags "-X main.version=1.2.3".
var version = ""

// Exit statuses; scripts and Ansible rely on them.
const (
	exitOK     = 0
	exitFailed = 1
	exitUsage  = 2
)

// Default deadline for quick read-only queries when --timeout is not given.
// Operations that change what runs and logs have none.
const queryTimeout = 30 * time.Second

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run runs hctl with args (args[0] is the program name) and returns the exit
// status. It never calls os.Exit, so tests run it in-process.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	h := &hctl{stdout: stdout, stderr: stderr}
	root := h.rootCommand()
	err := root.Run(ctx, args)
	return h.finish(err)
}

// hctl holds what every command shares: where output goes and the parsed
// global flags.
type hctl struct {
	stdout, stderr io.Writer
	root           *cli.Command
	// cl is made once: its idle connection to agentd serves the next
	// request (a directory deploy makes three in a row).
	cl *api.Client
}

func hctlVersion() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "dev"
}

func (h *hctl) rootCommand() *cli.Command {
	root := &cli.Command{
		Name:    "hctl",
		Usage:   "deploy and run apps on this host through agentd, without downtime",
		Version: hctlVersion(),
		UsageText: "hctl [global options] COMMAND [options] [ARGS]\n\n" +
			"Global options go before the command (hctl --socket /x status), or anywhere for\n" +
			"commands without a flag of the same name.",
		Description: "Exit status: 0 on success (also when there was nothing to do), 1 when an operation\n" +
			"failed (after a failed deploy the old release still serves), 2 on bad usage or when\n" +
			"agentd cannot be reached.\n\n" +
			"Examples:\n" +
			"  hctl apps create myapp --socket web=tcp://0.0.0.0:8080\n" +
			"  hctl deploy myapp ./build -m 'fix login'\n" +
			"  hctl --json releases myapp\n" +
			"  HCTL_SOCKET=/run/agentd/agentd.sock hctl ps",
		Flags: []cli.Flag{
			&cli.StringFlag{
				Name:    "socket",
				Usage:   "agentd's control socket `PATH`",
				Value:   api.ClientSocketPath(),
				Sources: cli.EnvVars("HCTL_SOCKET"),
			},
			&cli.BoolFlag{
				Name:  "json",
				Usage: "print exactly one JSON value on stdout (progress goes to stderr); never prompt",
			},
			&cli.DurationFlag{
				Name:        "timeout",
				Usage:       "give up after `DURATION` (default: none for operations and logs, 30s for queries)",
				HideDefault: true,
			},
		},
		Commands: []*cli.Command{
			h.statusCommand(),
			h.appsCommand(),
			h.deployCommand(),
			h.releasePhaseCommand(),
			h.postdrainCommand(),
			h.releasesCommand(),
			h.rollbackCommand(),
			h.canaryCommand(),
			h.promoteCommand(),
			h.psCommand(),
			h.scaleCommand(),
			h.restartCommand(),
			h.maintenanceCommand(),
			h.configCommand(),
			h.logsCommand(),
			h.cronCommand(),
			h.runCommand(),
			h.waitCommand(),
			h.cancelCommand(),
			h.bakeCommand(),
			h.agentCommand(),
		},
		Action: func(ctx context.Context, cmd *cli.Command) error {
			if cmd.NArg() == 0 {
				cmd.Writer = h.stderr
				_ = cli.ShowRootCommandHelp(cmd)
				cmd.Writer = h.stdout
				return &usageError{msg: "no command given; see hctl --help"}
			}
			return &usageError{msg: fmt.Sprintf("unknown command %q; see hctl --help", cmd.Args().First())}
		},
		Writer:    h.stdout,
		ErrWriter: h.stderr,
		// hctl maps errors to exit statuses itself, in finish.
		ExitErrHandler: func(context.Context, *cli.Command, error) {},
		// Adds the hidden `hctl completion bash|zsh|fish` (the packages ship
		// its scripts) and the --generate-shell-completion those scripts call.
		EnableShellCompletion: true,
	}
	root.Commands = append(root.Commands, h.docTreeCommand())
	_ = root.Walk(func(c *cli.Command) error {
		c.OnUsageError = onUsageError
		// Values of repeatable flags (readiness exec:CMD) may hold commas.
		c.DisableSliceFlagSeparator = true
		return nil
	})
	h.root = root
	return root
}

func onUsageError(_ context.Context, cmd *cli.Command, err error, _ bool) error {
	return &usageError{msg: fmt.Sprintf("%v; see %s --help", err, cmd.FullName())}
}

// usageError is bad usage: exit status 2, nothing was sent to agentd.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

// usagef reports bad arguments to cmd, with its one-line usage.
func usagef(cmd *cli.Command, format string, a ...any) error {
	msg := fmt.Sprintf(format, a...)
	if u := firstLine(cmd.UsageText); u != "" {
		msg += " (usage: " + u + ")"
	}
	return &usageError{msg: msg}
}

// opError is an operation that ran and failed (its stream ended with a
// result that is not OK): exit status 1. With --json its result, which
// carries "error" and "code", is what was printed on stdout.
type opError struct {
	msg  string
	code string
}

func (e *opError) Error() string { return e.msg }

// jsonMode reports whether --json was given.
func (h *hctl) jsonMode() bool { return h.root.Bool("json") }

// client returns an API client for the control socket of --socket.
func (h *hctl) client() *api.Client {
	if h.cl != nil {
		return h.cl
	}
	path := h.root.String("socket")
	if path == "" {
		path = api.ClientSocketPath()
	}
	c := api.NewClient(path)
	c.UserAgent = "hctl/" + hctlVersion()
	h.cl = c
	return c
}

// withTimeout applies --timeout to ctx, or def when --timeout is not given
// (0: no deadline).
func (h *hctl) withTimeout(ctx context.Context, def time.Duration) (context.Context, context.CancelFunc) {
	d := def
	if h.root.IsSet("timeout") {
		d = h.root.Duration("timeout")
	}
	if d <= 0 {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, d)
}

// finish reports err (one line on stderr, and with --json one JSON object on
// stdout) and returns the exit status for it.
func (h *hctl) finish(err error) int {
	if err == nil {
		return exitOK
	}
	var es *exitStatus
	if errors.As(err, &es) {
		return es.code // hctl run: the command's own status, said by its output
	}
	err = reword(err)
	code, jsonCode, msg := classify(err)
	if h.root != nil && h.root.IsSet("timeout") && errors.Is(err, context.DeadlineExceeded) {
		var unknown *api.OutcomeUnknownError
		if !errors.As(err, &unknown) {
			msg = fmt.Sprintf("timed out after %s waiting for agentd", h.root.Duration("timeout"))
		}
	}
	fmt.Fprintf(h.stderr, "hctl: %s\n", oneLine(msg))
	var op *opError
	if h.root != nil && h.root.Bool("json") && !errors.As(err, &op) {
		h.writeJSON(map[string]string{"error": msg, "code": jsonCode})
	}
	return code
}

// classify maps an error to an exit status, a code for --json and a message.
func classify(err error) (exit int, code, msg string) {
	msg = err.Error()
	var (
		usage   *usageError
		unreach *api.UnreachableError
		op      *opError
		apiErr  *api.Error
		unknown *api.OutcomeUnknownError
	)
	switch {
	case errors.As(err, &usage):
		return exitUsage, "usage", msg
	case errors.As(err, &unreach):
		return exitUsage, "unreachable", msg
	case errors.As(err, &op):
		return exitFailed, op.code, msg
	case errors.As(err, &unknown):
		return exitFailed, "outcome_unknown", msg
	case errors.As(err, &apiErr):
		// agentd refused the request as malformed: bad usage, like a local
		// validation error. Everything else agentd reports is a failure.
		if apiErr.Code == api.CodeBadRequest {
			return exitUsage, apiErr.Code, msg
		}
		return exitFailed, apiErr.Code, msg
	case errors.As(err, new(cli.ExitCoder)):
		// urfave/cli's own errors, such as "No help topic for 'x'".
		return exitUsage, "usage", msg
	case errors.Is(err, context.Canceled):
		return exitFailed, "interrupted", "interrupted"
	case errors.Is(err, context.DeadlineExceeded):
		return exitFailed, "timeout", "timed out waiting for agentd"
	}
	return exitFailed, "error", msg
}

func (h *hctl) writeJSON(v any) {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		fmt.Fprintf(h.stderr, "hctl: encoding JSON: %v\n", err)
		return
	}
	b = append(b, '\n')
	_, _ = h.stdout.Write(b)
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	return strings.TrimSpace(s)
}

// oneLine folds a multi-line message into one line.
func oneLine(s string) string {
	return strings.Join(strings.Fields(strings.ReplaceAll(s, "\n", " ")), " ")
}
