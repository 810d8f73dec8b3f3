# peerlan build. `make run` serves the demo; `make test` runs every test.
# Area-specific rules live beside their code and are included below.

SHELL := /bin/bash
GO ?= go
ADDR ?= 127.0.0.1:8080
BIN := bin
CACHE := .cache
GOFLAGS_BUILD := -trimpath

export GOTOOLCHAIN := local

.PHONY: all build run test unit e2e bench deps lint fmt clean

all: build

# deps installs what a fresh Debian machine lacks (no-op when present).
deps:
	@scripts/deps.sh

include web/web.mk
include guest/guest.mk

build: deps web-assets guest-image uml-guest web-precompress
	$(GO) build $(GOFLAGS_BUILD) -o $(BIN)/ ./signal/cmd/signal ./peer/cmd/peer $(wildcard ./gateway/cmd/gateway) ./e2e/wsrelay/cmd/wsrelay

STATE := .state

# The secret lives in .state/ (ignored) so tokens and resumes survive restarts.
run: build
	@mkdir -p $(STATE)
	$(BIN)/signal -addr $(ADDR) -secret-file $(STATE)/secret -turn-udp 127.0.0.1:3478 -turn-tcp 127.0.0.1:3478 -turn-relay-bind 127.0.0.1

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

unit:
	$(GO) test -race -count=1 $$($(GO) list ./... | grep -v /e2e)

# PEERLAN_E2E_STRICT turns "prerequisite missing" skips into failures: after
# `make build` and scripts/deps.sh nothing may be missing.
e2e: build
	PEERLAN_E2E_STRICT=1 $(GO) test -count=1 -timeout 40m -v ./e2e/...

test: build lint unit e2e

bench: build
	@scripts/bench.sh

clean:
	rm -rf $(BIN) web/dist/*/ web/dist/*.wasm web/dist/*.js web/dist/*.gz web/dist/*.br web/dist/*.new web/dist/*.tmp
