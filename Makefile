# DSTM gateway — the single entry point for building and testing.
SHELL := /bin/bash
GO ?= go
export GOTOOLCHAIN := local
export CGO_ENABLED ?= 0
# smallstep's nosql would link badger v1/v2, MySQL and PostgreSQL drivers that the embedded CA
# never uses (it keeps its database in bbolt). GOFLAGS reaches every go command, including the
# go build that the end-to-end tests run.
TAGS ?= nobadger,nomysql,nopgx
export GOFLAGS := $(strip $(GOFLAGS) -tags=$(TAGS))

VERSION := $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X github.com/dstmgw/dstm/internal/version.Version=$(VERSION)
BIN := bin
PKGS := ./...
FUZZTIME ?= 10s
BENCHTIME ?= 1s
STATICCHECK_VERSION ?= v0.8.2
# The client's own packages, vetted for every platform it is built for (make cross).
CLIENT_PKGS := ./cmd/dstm-client ./client/... ./certs/enroll ./auth/... ./tsp/... ./tunnel/... \
	./internal/hostnet ./internal/proxy ./internal/logging ./internal/packet ./internal/fsutil \
	./internal/dnsconf/... ./internal/dnsname
CROSS := linux/amd64 linux/arm64 darwin/amd64 darwin/arm64 windows/amd64 windows/arm64 freebsd/amd64 freebsd/arm64

.PHONY: all build cross test test-short fuzz lint bench chaos demo demo-cluster clean

all: build

## build: compile dstm-gateway and dstm-client into bin/
build:
	@mkdir -p $(BIN)
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/dstm-gateway ./cmd/dstm-gateway
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/dstm-client ./cmd/dstm-client

## cross: build and vet the client for Linux, macOS, Windows and FreeBSD (amd64, arm64)
cross:
	@set -e; for p in $(CROSS); do \
		echo "dstm-client $$p"; \
		GOOS=$${p%/*} GOARCH=$${p#*/} $(GO) build -trimpath -o /dev/null ./cmd/dstm-client; \
		GOOS=$${p%/*} GOARCH=$${p#*/} $(GO) vet $(CLIENT_PKGS); \
	done

## test: every package with the race detector; network-namespace tests run when root
test:
	CGO_ENABLED=1 $(GO) test -race -count=1 -timeout 20m $(PKGS)

## test-short: quick loop without the race detector
test-short:
	$(GO) test -count=1 -short $(PKGS)

## fuzz: every fuzz target for FUZZTIME each (one CPU; fails only on a reproducer)
fuzz:
	FUZZTIME=$(FUZZTIME) GO=$(GO) scripts/fuzz.sh

## chaos: the reliability campaign (root; about 3 h: CHAOS_FUZZTIME=10m per fuzz target, two at a time); results in docs/reliability.md
chaos: build
	GO=$(GO) scripts/chaos.sh

## lint: go vet + gofmt + staticcheck
lint:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { echo "gofmt needed:"; gofmt -l $$(git ls-files '*.go'); exit 1; }
	$(GO) vet $(PKGS)
	@command -v staticcheck >/dev/null 2>&1 || $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)
	PATH="$$PATH:$$($(GO) env GOPATH)/bin" staticcheck $(PKGS)

## bench: Go benchmarks, then one "BENCH <name> <value> <unit>" line per headline figure
bench:
	@mkdir -p $(BIN)
	@set -o pipefail; $(GO) test -run '^$$' -bench . -benchtime $(BENCHTIME) -benchmem $(PKGS) | tee $(BIN)/bench.txt
	@scripts/bench-summary.sh $(BIN)/bench.txt

## demo: the whole story in network namespaces (root)
demo: build
	scripts/demo.sh

## demo-cluster: two gateways on a three-member etcd; the laptop's gateway killed, the same address from the other (root)
demo-cluster: build
	$(GO) build -o $(BIN)/etcd go.etcd.io/etcd/server/v3
	scripts/demo-cluster.sh

clean:
	rm -rf $(BIN)
