# agentd: zero-downtime releases on bare Linux VMs.
# `make demo` shows it working; `make test` runs the whole test suite.

GO        ?= go
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -X main.version=$(VERSION)
BIN       := bin
GOFLAGS_BUILD := -trimpath -ldflags "$(LDFLAGS)"
export CGO_ENABLED ?= 0

.PHONY: all build demo bench test test-short fleet-test check fmt vet staticcheck fuzz clean

all: build

# agentd-shim, the exec shim between fork and each app's exec, is C with no
# runtime to start (static, stripped): agentd uses the one beside it. The
# same flags as internal/shimbuild (tests) and packaging/build.sh.
SHIM_SRC    := sockets/cmd/agentd-shim/agentd-shim.c
SHIM_CFLAGS := -O2 -static -nostdlib -ffreestanding -fno-stack-protector -fno-asynchronous-unwind-tables -Wl,-z,noseparate-code -s -fno-ident -Wall -Wextra -Werror

build:
	$(GO) build $(GOFLAGS_BUILD) -o $(BIN)/ ./agentd ./hctl
	$(CC) $(SHIM_CFLAGS) -o $(BIN)/agentd-shim $(SHIM_SRC)

## demo: start agentd, deploy the example app, redeploy it under load, print what happened.
demo:
	$(GO) run ./internal/demo

## bench: agentd against stop-then-start, SO_REUSEPORT and nginx blue/green,
## the cost of a proxy, and 100 apps of 4 processes (about 10 minutes on 2
## cores; never part of `make test`). Rewrites docs/benchmarks.md and
## docs/benchmarks.json. BENCH_FLAGS=-quick for a short trial run that writes
## nothing; installs Debian's nginx, wrk and hey first when run as root.
BENCH_FLAGS ?=
bench:
	$(GO) run ./internal/bench $(BENCH_FLAGS)

## test: the whole suite (real processes, real sockets), with the race detector, but for the
## end-to-end packages: they drive agentd binaries built without it (internal/harness), so it
## would instrument only their load clients, and take the CPU their load needs.
test:
	CGO_ENABLED=1 $(GO) test -race -count=1 -timeout 9m $$($(GO) list ./... | grep -v /internal/e2e)
	$(GO) test -count=1 -timeout 9m ./internal/e2e/...

test-short:
	$(GO) test -count=1 -short ./...

## fleet-test: rolling deploys with Ansible to three hosts (network namespaces, each with its
## own sshd and agentd) behind haproxy, under load (docs/fleet.md). Root; installs ansible,
## haproxy and openssh-server when missing. About 2 minutes.
fleet-test:
	internal/fleet/install-deps.sh
	AGENTD_FLEET_TEST=1 $(GO) test -count=1 -v -run '^TestFleet$$' -timeout 8m ./internal/fleet

## soak: 100 kill -9 of agentd at random instants of every kind of operation under kept-alive
## and new-connection POST load, each restart checked (one active release in formation, no
## unsupervised process, no failed request), then 1,000 deploys in a row watching agentd's RSS,
## fds, goroutines and state directory (internal/soak). Prints its seed and figures; SOAK_SEED=N
## replays a kill schedule. About 10 minutes on 2 cores; never part of `make test`.
.PHONY: soak
soak:
	AGENTD_SOAK=1 $(GO) test -count=1 -v -run '^TestSoak$$' -timeout 20m ./internal/soak

.PHONY: units-verify package package-test

## units-verify: systemd-analyze verify on units/ (part of `make test` too; skipped
## when systemd-analyze is not installed).
units-verify:
	$(GO) test -count=1 ./units/

## package: dist/agentd_VERSION-1_{amd64,arm64}.deb and dist/agentd-VERSION-1.{x86_64,aarch64}.rpm
## with nfpm (a Go tool, pinned in go.mod); VERSION from git unless PKG_VERSION=1.2.3.
PKG_VERSION ?=
package:
	GO="$(GO)" PKG_VERSION="$(PKG_VERSION)" packaging/build.sh

## package-test: builds the packages, runs lintian and rpmlint, checks their contents, and
## installs, upgrades, removes and purges the .deb in a Debian chroot (debootstrap, cached
## in /var/tmp/agentd-package-test; the chroot part needs root). CI runs it.
package-test: package
	packaging/test.sh

.PHONY: testvm testvm-break

## testvm: end-to-end on a Debian bookworm guest booted with systemd as PID 1 under qemu (TCG):
## install, socket unit, deploys, restart/reload/kill -9 of agentd and a package upgrade under
## load, reboot, remove, purge, /metrics through promtool (docs/testvm.md). Root; installs qemu,
## debootstrap and the rest with apt-get when missing; the guest's rootfs is cached in
## /var/tmp/agentd-testvm. TESTVM_FLAGS=-keep leaves the VM running to ssh in.
TESTVM_FLAGS ?=
testvm:
	$(GO) run ./testvm $(TESTVM_FLAGS)

## testvm-break: the deliberate break: scenario 2 with an agentd built to skip the readiness
## wait (go build -overlay, the tree is untouched); passes only if requests fail.
testvm-break:
	$(GO) run ./testvm -break $(TESTVM_FLAGS)

## check: everything a commit must pass.
check: fmt vet tidy staticcheck test

## tidy: fails when `go mod tidy` would change go.mod or go.sum (prints the diff); run
## `go mod tidy` and commit the result.
.PHONY: tidy
tidy:
	$(GO) mod tidy -diff

fmt:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet ./...

staticcheck:
	$(GO) tool staticcheck ./...

## fuzz: run every fuzz target for FUZZTIME each (seeds in each package's testdata/fuzz).
FUZZTIME ?= 30s
fuzz:
	@set -e; for pkg in $$(grep -rl --include='*_test.go' '^func Fuzz' . | xargs -n1 dirname | sort -u); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz' || true); do \
	    echo "== $$pkg $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg; \
	  done; done

clean:
	rm -rf $(BIN) dist
