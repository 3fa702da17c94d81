package main

import (
	"context"
	"fmt"
	"io"
	"os"

	"github.com/agentd/agentd/agentd/api"
	"github.com/urfave/cli/v3"
)

// runOp runs a streaming operation: progress lines go to stderr as they
// come, then one summary line (or with --json the result) to stdout.
func (h *hctl) runOp(ctx context.Context, what, app string,
	call func(ctx context.Context, onEvent func(api.Event)) (*api.OpResult, error),
	summary func(res *api.OpResult) string,
) error {
	ctx, cancel := h.withTimeout(ctx, 0)
	defer cancel()
	res, err := call(ctx, func(ev api.Event) { progress(h.stderr, ev) })
	if res != nil && res.App == "" {
		res.App = app
	}
	if err != nil {
		if res != nil && h.jsonMode() {
			h.writeJSON(res)
		}
		return opFailure(what, app, res, err)
	}
	if h.jsonMode() {
		h.writeJSON(res)
		return nil
	}
	fmt.Fprintln(h.stdout, summary(res))
	return nil
}

// liveSummary is the summary line of an operation that moves the app to a
// release: "myapp v3 is live (switch 1.23s, drain 0.41s)".
func liveSummary(res *api.OpResult) string {
	if res.Detached {
		return fmt.Sprintf("%s: started, and goes on without hctl: follow it with hctl wait %s, stop it with hctl cancel %s", res.App, res.App, res.App)
	}
	if !res.Changed {
		return fmt.Sprintf("%s %s already active, nothing to do", res.App, orNone(res.Release))
	}
	if res.Pending {
		return fmt.Sprintf("%s %s is prepared and pending: %s is in maintenance; hctl maintenance %s off rolls it out", res.App, res.Release, res.App, res.App)
	}
	s := fmt.Sprintf("%s %s is live%s", res.App, orNone(res.Release), opTimes(res))
	if res.StillDraining > 0 {
		s += fmt.Sprintf("; the drain goes on in the background: %d old process(es) hold %d connection(s), until %s",
			res.StillDraining, res.DrainConnections, res.DrainDeadline.Local().Format("15:04:05"))
	}
	return s
}

func orNone(rel string) string {
	if rel == "" {
		return "(no release)"
	}
	return rel
}

// openArtifact checks PATH and opens it as a .tar.gz stream. Problems with
// PATH are bad usage.
func openArtifact(cmd *cli.Command, path string) (io.ReadCloser, error) {
	if _, err := os.Stat(path); err != nil {
		return nil, usagef(cmd, "cannot use %s: %v", path, unwrapPathError(err))
	}
	rc, err := api.OpenArtifact(path)
	if err != nil {
		return nil, usagef(cmd, "%v", err)
	}
	return rc, nil
}

func unwrapPathError(err error) error {
	if pe, ok := err.(*os.PathError); ok {
		return pe.Err
	}
	return err
}

func (h *hctl) deployCommand() *cli.Command {
	return &cli.Command{
		Name:      "deploy",
		Usage:     "deploy a directory or .tar.gz as a new release, without downtime",
		UsageText: "hctl deploy APP PATH [-m MSG] [--skip-release-phase] [--release-id ID] [--canary P%]",
		Description: "PATH is a directory or a .tar.gz holding a Procfile. hctl waits and streams the phases\n" +
			"(prepare, release, preboot, readiness, cutover, drain) to stderr. If the deploy fails,\n" +
			"the old release keeps serving and hctl exits 1. Deploying the active release again does\n" +
			"nothing and exits 0.\n\n" +
			"Examples:\n" +
			"  hctl deploy myapp ./build -m 'fix login'\n" +
			"  hctl deploy myapp myapp-1.4.tar.gz --release-id $(git rev-parse HEAD)\n" +
			"  hctl deploy myapp ./build --skip-release-phase   # after hctl release-phase on one host\n" +
			"  hctl deploy myapp ./build --canary 10%          # 10% of new connections; see hctl canary --help\n" +
			"  hctl --json deploy myapp ./build 2>deploy.log | jq -r .release",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "message", Aliases: []string{"m"}, Usage: "describe the release (`MSG`)", Local: true},
			&cli.BoolFlag{Name: "skip-release-phase", Usage: "do not run the release: command (it ran elsewhere)", Local: true},
			&cli.BoolFlag{Name: "skip-postdrain", Usage: "leave app.json's scripts.agentd.postdrain to hctl postdrain (once per fleet)", Local: true},
			&cli.StringFlag{Name: "release-id", Usage: "keep `ID` (a commit, a build number) with the release", Local: true},
			&cli.BoolFlag{Name: "detach", Usage: "return once the deploy has started; follow it with hctl wait APP", Local: true},
			&cli.DurationFlag{Name: "wait-drain", Local: true, HideDefault: true,
				Usage: "once the new release is live, wait at most `D` for the old processes to exit; they drain on after it (default 30s)"},
			canaryFlag(),
		},
		Action: func(ctx context.Context, cmd *cli.Command) error {
			a, err := needArgs(cmd, 2, 2, "APP", "PATH")
			if err != nil {
				return err
			}
			app, path := a[0], a[1]
			if err := checkAppName(cmd, app); err != nil {
				return err
			}
			opt := api.DeployOptions{
				Message:          cmd.String("message"),
				SkipReleasePhase: cmd.Bool("skip-release-phase"),
				SkipPostdrain:    cmd.Bool("skip-postdrain"),
				ReleaseID:        cmd.String("release-id"),
				Detach:           cmd.Bool("detach"),
				WaitDrain:        cmd.Duration("wait-drain"),
			}
			if opt.Canary, err = canaryOption(cmd); err != nil {
				return err
			}
			summary := deploySummary(opt.Canary)
			if fi, err := os.Stat(path); err == nil && fi.IsDir() {
				// A directory goes manifest first: only what agentd lacks
				// is sent (see upload.go).
				d, err := scanDirUpload(path)
				if err != nil {
					return usagef(cmd, "%v", err)
				}
				return h.runOp(ctx, "deploy", app,
					func(ctx context.Context, on func(api.Event)) (*api.OpResult, error) {
						defer d.finish(h.stderr)
						id, err := h.upload(ctx, app, d)
						switch {
						case err != nil:
							return nil, err
						case id != "":
							res, err := h.client().DeployUpload(ctx, app, id, opt, on)
							return res, h.explainNoSteering(ctx, app, err)
						}
						art, err := api.OpenArtifact(path)
						if err != nil {
							return nil, err
						}
						defer art.Close()
						res, err := h.client().Deploy(ctx, app, art, opt, on)
						return res, h.explainNoSteering(ctx, app, err)
					}, summary)
			}
			art, err := openArtifact(cmd, path)
			if err != nil {
				return err
			}
			defer art.Close()
			return h.runOp(ctx, "deploy", app,
				func(ctx context.Context, on func(api.Event)) (*api.OpResult, error) {
					res, err := h.client().Deploy(ctx, app, art, opt, on)
					return res, h.explainNoSteering(ctx, app, err)
				}, summary)
		},
	}
}

func (h *hctl) releasePhaseCommand() *cli.Command {
	return &cli.Command{
		Name:      "release-phase",
		Usage:     "run only the release: command of PATH (migrations once per fleet)",
		UsageText: "hctl release-phase APP PATH",
		Description: "Runs the Procfile's release: command once with the app's config, and nothing else:\n" +
			"nothing running is touched. Then deploy on every host with --skip-release-phase.\n\n" +
			"Examples:\n" +
			"  hctl release-phase myapp ./build && hctl deploy myapp ./build --skip-release-phase",
		Action: func(ctx context.Context, cmd *cli.Command) error {
			a, err := needArgs(cmd, 2, 2, "APP", "PATH")
			if err != nil {
				return err
			}
			app, path := a[0], a[1]
			if err := checkAppName(cmd, app); err != nil {
				return err
			}
			art, err := openArtifact(cmd, path)
			if err != nil {
				return err
			}
			defer art.Close()
			return h.runOp(ctx, "release phase", app,
				func(ctx context.Context, on func(api.Event)) (*api.OpResult, error) {
					return h.client().ReleasePhase(ctx, app, art, on)
				},
				func(res *api.OpResult) string {
					for _, p := range res.Phases {
						if p.Name == api.PhaseRelease {
							return fmt.Sprintf("%s release phase succeeded (%s)", res.App, secs(p.Seconds))
						}
					}
					return fmt.Sprintf("%s release phase succeeded", res.App)
				})
		},
	}
}

func (h *hctl) rollbackCommand() *cli.Command {
	return &cli.Command{
		Name:      "rollback",
		Usage:     "deploy an earlier release's code and config again, as a new release",
		UsageText: "hctl rollback APP [vN]",
		Description: "Without vN, rolls back to the release before the active one. Like a deploy, it waits,\n" +
			"streams progress, and leaves the active release serving if it fails.\n\n" +
			"Examples:\n" +
			"  hctl rollback myapp\n" +
			"  hctl rollback myapp v7",
		Action: func(ctx context.Context, cmd *cli.Command) error {
			a, err := needArgs(cmd, 1, 2, "APP")
			if err != nil {
				return err
			}
			app := a[0]
			if err := checkAppName(cmd, app); err != nil {
				return err
			}
			var version string
			if len(a) == 2 {
				if version, err = releaseVersion(cmd, a[1]); err != nil {
					return err
				}
			}
			return h.runOp(ctx, "rollback", app,
				func(ctx context.Context, on func(api.Event)) (*api.OpResult, error) {
					return h.client().Rollback(ctx, app, version, on)
				},
				func(res *api.OpResult) string {
					if !res.Changed {
						return liveSummary(res)
					}
					to := ""
					if version != "" {
						to = " to " + version
					}
					return fmt.Sprintf("%s rolled back%s: %s is live%s", res.App, to, orNone(res.Release), opTimes(res))
				})
		},
	}
}

func (h *hctl) releasesCommand() *cli.Command {
	return &cli.Command{
		Name:      "releases",
		Usage:     "list an app's releases (its deploy history), or show one",
		UsageText: "hctl releases APP | hctl releases info APP vN",
		Description: "Newest first: each release's status, when and how it was made, its message and digest,\n" +
			"who made it, and how long each phase of its deploy took.\n\n" +
			"Examples:\n" +
			"  hctl releases myapp\n" +
			"  hctl releases info myapp v3\n" +
			"  hctl --json releases myapp | jq -r '.[] | select(.status == \"active\") | .name'",
		Commands: []*cli.Command{{
			Name:      "info",
			Usage:     "show one release: status, who, digest, Procfile, config keys, phase times, why it failed",
			UsageText: "hctl releases info APP vN",
			Description: "Examples:\n" +
				"  hctl releases info myapp v3",
			Action: func(ctx context.Context, cmd *cli.Command) error {
				a, err := needArgs(cmd, 2, 2, "APP", "vN")
				if err != nil {
					return err
				}
				if err := checkAppName(cmd, a[0]); err != nil {
					return err
				}
				v, err := releaseVersion(cmd, a[1])
				if err != nil {
					return err
				}
				ctx, cancel := h.withTimeout(ctx, queryTimeout)
				defer cancel()
				rel, err := h.client().Release(ctx, a[0], v)
				if err != nil {
					return err
				}
				if h.jsonMode() {
					h.writeJSON(rel)
					return nil
				}
				writeRelease(h.stdout, rel)
				return nil
			},
		}},
		Action: func(ctx context.Context, cmd *cli.Command) error {
			app, err := appArg(cmd)
			if err != nil {
				return err
			}
			ctx, cancel := h.withTimeout(ctx, queryTimeout)
			defer cancel()
			rels, err := h.client().Releases(ctx, app)
			if err != nil {
				return err
			}
			if h.jsonMode() {
				if rels == nil {
					rels = []api.Release{}
				}
				h.writeJSON(rels)
				return nil
			}
			writeReleases(h.stdout, rels)
			return nil
		},
	}
}
