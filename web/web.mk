# Page assets (included by the top-level Makefile; paths are relative to the
# repository root). `web-assets` installs the pinned npm packages, copies the
# files the page serves into web/dist/ and builds the wasm peer when its
# source exists. Others write into web/dist/ too (guest/, bios/): only the
# files named here are ever created or replaced, never the folder itself.

.PHONY: web-assets web-wasm web-precompress

WEB_NPM_STAMP := web/node_modules/.peerlan-installed
WEB_V86_SRC := web/node_modules/v86
WEB_XTERM_SRC := web/node_modules/@xterm/xterm
WEB_FIT_SRC := web/node_modules/@xterm/addon-fit

# The emulator as an ES module, its wasm (the fallback build serves browsers
# without the wasm features the main one needs) and the licence notices the
# BSD/MIT licences ask us to ship with the copies.
WEB_VENDORED := \
	web/dist/v86/libv86.mjs \
	web/dist/v86/v86.wasm \
	web/dist/v86/v86-fallback.wasm \
	web/dist/v86/LICENSE \
	web/dist/xterm/xterm.mjs \
	web/dist/xterm/xterm.css \
	web/dist/xterm/addon-fit.mjs \
	web/dist/xterm/LICENSE

web-assets: $(WEB_VENDORED) web-wasm

# npm ci wipes node_modules, so it runs only when the lock file changed; the
# stamp is newer than the lock after a successful install.
$(WEB_NPM_STAMP): web/package-lock.json web/package.json
	cd web && npm ci --no-audit --no-fund --loglevel=error
	@touch $@

web/dist/v86/%.mjs: $(WEB_NPM_STAMP)
	@mkdir -p $(@D)
	cp $(WEB_V86_SRC)/build/$(@F) $@

web/dist/v86/%.wasm: $(WEB_NPM_STAMP)
	@mkdir -p $(@D)
	cp $(WEB_V86_SRC)/build/$(@F) $@

web/dist/v86/LICENSE: $(WEB_NPM_STAMP)
	@mkdir -p $(@D)
	cp $(WEB_V86_SRC)/LICENSE $@

web/dist/xterm/xterm.mjs: $(WEB_NPM_STAMP)
	@mkdir -p $(@D)
	cp $(WEB_XTERM_SRC)/lib/xterm.mjs $@

web/dist/xterm/xterm.css: $(WEB_NPM_STAMP)
	@mkdir -p $(@D)
	cp $(WEB_XTERM_SRC)/css/xterm.css $@

web/dist/xterm/addon-fit.mjs: $(WEB_NPM_STAMP)
	@mkdir -p $(@D)
	cp $(WEB_FIT_SRC)/lib/addon-fit.mjs $@

web/dist/xterm/LICENSE: $(WEB_NPM_STAMP)
	@mkdir -p $(@D)
	cp $(WEB_XTERM_SRC)/LICENSE $@

# The wasm peer is the lead's (wasm/); until its source exists the page runs
# without a network and says so. Go decides what is stale, so this always runs
# go build; wasm_exec.js must come from the same Go that built the module.
WEB_WASM_DIR ?= wasm
# -s drops the symbols; `make web-assets WASM_LDFLAGS=` keeps them, so that
# browser CPU profiles name Go functions (e2e/browser_profile_test.go).
WASM_LDFLAGS ?= -s
WEB_WASM_SOURCES := $(wildcard $(WEB_WASM_DIR)/*.go)

web-wasm:
ifneq ($(WEB_WASM_SOURCES),)
	@mkdir -p web/dist
	GOOS=js GOARCH=wasm $(GO) build -trimpath -ldflags='$(WASM_LDFLAGS)' -o web/dist/peerlan.wasm.new ./$(WEB_WASM_DIR)
	@# Replaced only when it changed, so web-precompress (15 s of brotli)
	@# does not run again for the same bytes.
	@if cmp -s web/dist/peerlan.wasm.new web/dist/peerlan.wasm; then rm web/dist/peerlan.wasm.new; else mv web/dist/peerlan.wasm.new web/dist/peerlan.wasm; fi
	@src="$$($(GO) env GOROOT)/lib/wasm/wasm_exec.js"; cmp -s "$$src" web/dist/wasm_exec.js || cp "$$src" web/dist/wasm_exec.js
	@raw=$$(stat -c %s web/dist/peerlan.wasm); gz=$$(gzip -9c web/dist/peerlan.wasm | wc -c); \
		echo "web/dist/peerlan.wasm: $$raw bytes raw, $$gz bytes gzip -9"
else
	@echo "web/dist/peerlan.wasm: skipped, no $(WEB_WASM_DIR)/*.go yet (the page runs without a network)"
endif

# Precompressed variants for internal/static: X.br (brotli -q 11) and X.gz
# (gzip -9 -n, no name or time, so a rebuild of the same X gives the same
# bytes) beside every file in web/dist/ of at least WEB_PRECOMPRESS_MIN
# bytes, after everything else there is built (the guest image too: make
# build runs this last). A variant is remade when X is newer than it; the
# server ignores a variant that saves under 5% (the kernel, the initrd, which
# are compressed already) or that is older than its file, and a .gz whose
# length does not match. Files that are compressed already get none: .gz,
# .br, and the kernel (bzImage is self-decompressing: brotli saved 1.4%).
WEB_PRECOMPRESS_MIN ?= 1400

web-precompress: web-assets guest-image
	@command -v brotli >/dev/null || { echo "web: brotli not found (apt-get install brotli, or make deps)"; exit 1; }
	@find web/dist -type f -size +$(WEB_PRECOMPRESS_MIN)c ! -name '*.gz' ! -name '*.br' ! -name bzImage -print | sort | while read -r f; do \
		if [ ! -f "$$f.gz" ] || [ "$$f" -nt "$$f.gz" ]; then gzip -9 -n -c "$$f" > "$$f.gz.tmp" && mv "$$f.gz.tmp" "$$f.gz" || exit 1; fi; \
		if [ ! -f "$$f.br" ] || [ "$$f" -nt "$$f.br" ]; then brotli -q 11 -c "$$f" > "$$f.br.tmp" && mv "$$f.br.tmp" "$$f.br" || exit 1; fi; \
		echo "web: $$f: $$(stat -c %s "$$f") B, gzip $$(stat -c %s "$$f.gz"), brotli $$(stat -c %s "$$f.br")"; \
	done
