# agentd: zero-downtime releases on bare Linux VMs.
# `make demo` shows it working; `make test` runs the whole test suite.

GO        ?= go
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -X main.version=$(VERSION)
BIN       := bin
GOFLAGS_BUILD := -trimpath -ldflags "$(LDFLAGS)"
export CGO_ENABLED ?= 0

.PHONY: all build demo test test-short check fmt vet staticcheck fuzz clean

all: build

build:
	$(GO) build $(GOFLAGS_BUILD) -o $(BIN)/ ./agentd ./hctl

## demo: start agentd, deploy the example app, redeploy it under load, print what happened.
demo:
	$(GO) run ./internal/demo

## test: the whole suite, with the race detector (real processes, real sockets).
test:
	CGO_ENABLED=1 $(GO) test -race -count=1 -timeout 9m ./...

test-short:
	$(GO) test -count=1 -short ./...

## check: everything a commit must pass.
check: fmt vet staticcheck test

fmt:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet ./...

staticcheck:
	$(GO) tool staticcheck ./...

## fuzz: run every fuzz target for FUZZTIME each.
FUZZTIME ?= 30s
fuzz:
	@set -e; for pkg in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz' || true); do \
	    echo "== $$pkg $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg; \
	  done; done

clean:
	rm -rf $(BIN) dist
