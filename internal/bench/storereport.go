package main

import (
	"fmt"
	"strings"
)

// storeTargets judges the store scenario against issue 14's targets.
func storeTargets(s *storeResults) []targetOutcome {
	var ts []targetOutcome
	for _, c := range s.Cases {
		switch {
		case c.MiB == 8 && c.CpA.valid():
			ts = append(ts, targetOutcome{
				Name:  "8 MiB release: new code live ≤ app boot + 30 ms",
				Value: c.Manifest.format(fmtDur) + " beyond the app's boot" + floorNote(s, c.CpA.Median),
				Met:   c.Manifest.valid() && c.Manifest.Median <= 0.030,
			})
		case c.MiB == 256 && c.CpA.valid():
			ts = append(ts, targetOutcome{
				Name:  "256 MiB of new files: within 1.5× of cp -a + sync",
				Value: fmt.Sprintf("%s against %s (%.2f×)", c.Manifest.format(fmtDur), c.CpA.format(fmtDur), ratio(c.Manifest.Median, c.CpA.Median)),
				Met:   c.Manifest.valid() && c.Manifest.Median <= 1.5*c.CpA.Median,
			})
		case c.MiB == 256:
			ts = append(ts, targetOutcome{
				Name:  "256 MiB, one file changed: new code live ≤ app boot + 30 ms",
				Value: c.Manifest.format(fmtDur) + " beyond the app's boot" + floorNote(s, -1),
				Met:   c.Manifest.valid() && c.Manifest.Median <= 0.030,
			})
		}
	}
	if s.PeakRSSMiB > 0 {
		ts = append(ts, targetOutcome{
			Name:  "agentd's RSS ≤ 64 MiB through 256 MiB deploys",
			Value: fmt.Sprintf("peak %s", fmtMiB(s.PeakRSSMiB)),
			Met:   s.PeakRSSMiB <= 64,
		})
	}
	if len(s.StartChain) >= 4 {
		direct, after := s.StartChain[0].Seconds, s.StartChain[3].Seconds
		ts = append(ts, targetOutcome{
			Name:  "process start chain ≤ 1 ms median over a direct fork+exec",
			Value: fmt.Sprintf("%s over (%s against %s)", fmtDur(after.Median-direct.Median), fmtDur(after.Median), fmtDur(direct.Median)),
			Met:   after.valid() && after.Median-direct.Median <= 0.001,
		})
	}
	if ws := s.WholeStart; ws != nil {
		ts = append(ts, targetOutcome{
			Name:  "whole process start (placement + record) ≤ 3 ms median, ≤ 6 ms p99",
			Value: fmt.Sprintf("median %s, p99 %s (%d starts)", fmtDur(ws.Total.Median), fmtDur(ws.Total.P99), ws.Total.N),
			Met:   ws.Total.valid() && ws.Total.Median <= 0.003 && ws.Total.P99 <= 0.006,
		})
	}
	return ts
}

// floorNote says what of a boot + 30 ms target this machine takes before
// agentd does anything: hctl's start, and the new content's way to disk
// (cp -a + sync of the tree, or the fsync of the one new file when
// written is negative).
func floorNote(s *storeResults, written float64) string {
	f := s.Floor
	if f == nil || !f.HctlStart.valid() {
		return ""
	}
	disk, what := written, "cp -a + sync"
	if written < 0 {
		disk, what = f.Fsync1MiB.Median, "write+fsync of 1 MiB"
	}
	return fmt.Sprintf(" (this machine's floor: hctl's start %s + %s %s = %s)", fmtDur(f.HctlStart.Median), what, fmtDur(disk), fmtDur(f.HctlStart.Median+disk))
}

func reportStore(b *strings.Builder, s *storeResults) {
	p := func(format string, args ...any) { fmt.Fprintf(b, format, args...) }
	p("## 5. Deploys as fast as the disk: the release store\n\n")
	p("From `hctl deploy APP PATH` to the first answer from the new release (polled every millisecond on a new connection, from when hctl says agentd's preboot began: the new code cannot answer before, and polling the old release meanwhile would take CPU from what is measured), minus the app's own boot ")
	p("(the same binary started directly, fork to first answer: %s), with `notify` readiness and no load. ", s.AppBoot.format(fmtDur))
	p("Each release is the app's binary, its Procfile and N files of 1 MiB of random bytes. ")
	p("The binary is the same in every release but copied into each new tree with a new mtime, as a rebuild leaves it: agentd writes it again (its mtime needs an inode of its own) and counts it as sent. ")
	p("**.tar.gz** is the path a directory took before the store, and still takes for a `.tar.gz`: packed (counted here), sent, unpacked, digested. ")
	p("**manifest** is `hctl deploy DIR` now: the manifest, then only the files agentd lacks, handed over as open files that agentd reads itself; the release is built of hard links to read-only blobs. ")
	p("**cp -a + sync** copies the same tree on the same disk: the local physical reference. Each timed step starts after a `sync`, so none pays for the writes of the one before. ")
	p("The one-file case changes one 1 MiB file of the 256 MiB tree deployed just before (hctl's hash cache warm)")
	if s.OneFile > 1 {
		p(", %d times a run as a manifest (one .tar.gz a run)", s.OneFile)
	}
	p(". %s.\n\n", plural(s.Runs, "run"))
	p("| release | cp -a + sync | .tar.gz (before) | manifest (after) | of which prepare | sent |\n|---|---|---|---|---|---|\n")
	for _, c := range s.Cases {
		p("| %s | %s | %s | %s | %s | %s |\n", c.Name, c.CpA.format(fmtDur), c.TarGz.format(fmtDur), bold(c.Manifest.format(fmtDur)), c.Prepare.format(fmtDur), c.SentMiB.format(fmtMiB))
	}
	p("\nagentd's peak RSS (VmHWM) over these deploys: %s.\n\n", fmtMiB(s.PeakRSSMiB))
	if f := s.Floor; f != nil {
		p("What no deploy on this machine goes below, measured in the same run (%d each): `hctl --version`, fork to exit, %s (hctl's own start is in every deploy); ", f.HctlStart.N, f.HctlStart.format(fmtDur))
		p("the write and fsync of a new 1 MiB file, %s (the one-file change's new content is on disk before its release is recorded); ", f.Fsync1MiB.format(fmtDur))
		p("for the 8 MiB case, `cp -a` + `sync` of its tree above.\n\n")
	}
	reportSteps(b, s)
	if len(s.StartChain) > 0 {
		p("The process start chain, fork to exit of `/bin/true` (%d each, interleaved):\n\n| chain | time | over fork+exec |\n|---|---|---|\n", s.StartChain[0].Seconds.N)
		for _, c := range s.StartChain {
			p("| %s | %s | %s |\n", c.What, c.Seconds.format(fmtDur), fmtDur(c.Seconds.Median-s.StartChain[0].Seconds.Median))
		}
		p("\n")
	}
	if ws := s.WholeStart; ws != nil {
		p("The whole process start as agentd times it (`agentd_process_start_seconds`), from its first step of a process through fork and exec of the shim, ")
		p("the cgroup placement and the record (state written and renamed into place) to the go-ahead that lets the shim exec the app; ")
		p("%d starts, one per `hctl scale` from 1 to 2 processes, load average %s at the start:\n\n", ws.Total.N, ws.Load)
		p("| step | median | p99 | max |\n|---|---|---|---|\n")
		for _, r := range []struct {
			what string
			d    dist
		}{{"setup (environment, notify socket, log file)", ws.Setup}, {"fork + exec of the shim", ws.Fork}, {"cgroup placement", ws.Place},
			{"wait for the record", ws.Wait}, {"record + go-ahead", ws.Record}, {"**whole start**", ws.Total}} {
			if r.d.Max == 0 && r.d.valid() && r.what == "cgroup placement" {
				p("| %s | not here: agentd places processes in release scopes only when systemd runs it | | |\n", r.what)
				continue
			}
			p("| %s | %s | %s | %s |\n", r.what, fmtDur(r.d.Median), fmtDur(r.d.P99), fmtDur(r.d.Max))
		}
		p("\n")
	}
}
