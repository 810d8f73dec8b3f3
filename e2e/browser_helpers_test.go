//go:build linux

package e2e

// Helpers that drive Debian's headless Chromium (chromedp) against the
// peerlan page. Each StartBrowser call starts its own browser *process* with a
// fresh profile, so a test can run two independent browsers; each Tab is one
// page whose console is piped into t.Logf. The page is reached through a base
// URL, so the same helpers work against ServePage (static files) and the real
// signaling server.
//
// The page's test hooks (window.peerlanPage) are documented at the top of
// web/app.js.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/cdproto/target"
	"github.com/chromedp/chromedp"
	"go.uber.org/goleak"

	"github.com/peerlan/peerlan/web"
)

// ChromiumPath is Debian's chromium package.
const ChromiumPath = "/usr/bin/chromium"

// Default waits. Boot times depend on how busy the machine's cores are; these
// are limits for a test that is stuck, not speed targets.
const (
	BootTimeout    = 4 * time.Minute
	CommandTimeout = 60 * time.Second
	pollInterval   = 200 * time.Millisecond
)

// The files of the guest image, as the page fetches them (see web/app.js).
var guestImageFiles = []string{
	"dist/guest/bzImage",
	"dist/guest/initrd.gz",
	"dist/guest/cmdline.txt",
	"dist/bios/seabios.bin",
	"dist/bios/vgabios.bin",
}

// pageAssetFiles are the page's own built files (web/web.mk).
var pageAssetFiles = []string{
	"dist/v86/libv86.mjs",
	"dist/v86/v86.wasm",
	"dist/xterm/xterm.mjs",
}

// VerifyNoLeaks fails the test if goroutines it started (the browser's
// readers, console pipes, HTTP servers) outlive it. Call it first, so its
// check runs after every other cleanup.
func VerifyNoLeaks(t testing.TB) {
	t.Helper()
	ignore := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, ignore) })
}

// RequireChromium skips the test when Debian's chromium is not installed.
func RequireChromium(t testing.TB) {
	t.Helper()
	if _, err := os.Stat(ChromiumPath); err != nil {
		skipOrFail(t, "headless browser test needs %s (apt-get install chromium): %v", ChromiumPath, err)
	}
}

// RequirePageAssets skips the test when the page's npm assets are not in the
// embedded web.FS().
func RequirePageAssets(t testing.TB) {
	t.Helper()
	requireFiles(t, "page assets", pageAssetFiles)
}

// RequireGuestImage skips the test when the guest image or the page's assets
// are not in the embedded web.FS() (they are built files, not committed).
func RequireGuestImage(t testing.TB) {
	t.Helper()
	RequirePageAssets(t)
	requireFiles(t, "guest image", guestImageFiles)
}

func requireFiles(t testing.TB, what string, names []string) {
	t.Helper()
	for _, name := range names {
		if _, err := fs.Stat(web.FS(), name); err != nil {
			skipOrFail(t, "%s not built: web/%s is missing; run `make build` first", what, name)
		}
	}
}

// ServePage serves fsys (usually web.FS()) over HTTP on loopback for the
// test's lifetime and returns the base URL, without a trailing slash.
func ServePage(t testing.TB, fsys fs.FS) string {
	t.Helper()
	srv := httptest.NewServer(http.FileServer(http.FS(fsys)))
	t.Cleanup(srv.Close)
	return srv.URL
}

// safeLog forwards to t.Logf until the test's cleanup stops it, so a browser
// goroutine that logs late never calls Logf after the test finished.
type safeLog struct {
	mu      sync.Mutex
	t       testing.TB
	stopped bool
}

func (l *safeLog) Logf(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.stopped {
		l.t.Logf(format, args...)
	}
}

func (l *safeLog) stop() {
	l.mu.Lock()
	l.stopped = true
	l.mu.Unlock()
}

// Browser is one Chromium process.
type Browser struct {
	t      testing.TB
	log    *safeLog
	ctx    context.Context // the browser's first tab, kept blank as its anchor
	cancel func()          // stops the browser process; idempotent
}

// browserFlags are the flags asked of every test browser, on top of chromedp's
// defaults. Chromium must behave as a user's would, so the defaults that keep
// hidden tabs from being throttled are switched off: a hidden-tab test must
// see the real throttling.
func browserFlags(profile string) []chromedp.ExecAllocatorOption {
	return []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(ChromiumPath),
		chromedp.UserDataDir(profile),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		// WebRTC must offer the real loopback/LAN addresses as host
		// candidates, not mDNS names that nothing here resolves.
		chromedp.Flag("disable-features", "WebRtcHideLocalIpsWithMdns"),
		chromedp.Flag("disable-background-timer-throttling", false),
		chromedp.Flag("disable-backgrounding-occluded-windows", false),
		chromedp.Flag("disable-renderer-backgrounding", false),
		chromedp.WindowSize(1280, 900),
		chromedp.ModifyCmdFunc(prepareBrowserCmd),
	}
}

// prepareBrowserCmd merges repeated --disable-features / --enable-features
// flags into one each (Chromium honours only the last one, so chromedp's
// defaults and ours would otherwise replace each other), and kills the browser
// when the test process dies, as chromedp's default does.
func prepareBrowserCmd(cmd *exec.Cmd) {
	cmd.Args = mergeFeatureFlags(cmd.Args)
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
}

// mergeFeatureFlags returns args with every --disable-features=... and
// --enable-features=... joined into one flag of each kind, at the place of
// the first, keeping each feature once in first-seen order.
func mergeFeatureFlags(args []string) []string {
	const disable, enable = "--disable-features=", "--enable-features="
	features := map[string][]string{}
	at := map[string]int{}
	var out []string
	for _, a := range args {
		prefix := ""
		switch {
		case strings.HasPrefix(a, disable):
			prefix = disable
		case strings.HasPrefix(a, enable):
			prefix = enable
		}
		if prefix == "" {
			out = append(out, a)
			continue
		}
		for _, f := range strings.Split(strings.TrimPrefix(a, prefix), ",") {
			if f != "" && !slices.Contains(features[prefix], f) {
				features[prefix] = append(features[prefix], f)
			}
		}
		if _, seen := at[prefix]; !seen {
			at[prefix] = len(out)
			out = append(out, "") // placeholder, filled below
		}
	}
	for prefix, i := range at {
		out[i] = prefix + strings.Join(features[prefix], ",")
	}
	return out
}

// StartBrowser starts a new Chromium process for the test and stops it in the
// test's cleanup. extra options are applied after the standard flags (for
// example chromedp.Flag("enable-features", ...), which is merged too).
func StartBrowser(t testing.TB, extra ...chromedp.ExecAllocatorOption) *Browser {
	t.Helper()
	RequireChromium(t)
	log := &safeLog{t: t}
	opts := append(slices.Clone(chromedp.DefaultExecAllocatorOptions[:]), browserFlags(t.TempDir())...)
	opts = append(opts, extra...)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(allocCtx,
		chromedp.WithLogf(log.Logf), chromedp.WithErrorf(log.Logf))
	stop := func() {
		cancel()
		cancelAlloc()
	}
	t.Cleanup(func() {
		stop()
		log.stop()
	})
	if err := chromedp.Do(ctx); err != nil { // starts the process
		t.Fatalf("starting %s: %v", ChromiumPath, err)
	}
	return &Browser{t: t, log: log, ctx: ctx, cancel: stop}
}

// Close stops the browser process before the test ends (its cleanup does it
// otherwise), e.g. so that a benchmark's next setup has the cores to itself.
// Its tabs stop working.
func (b *Browser) Close() { b.cancel() }

// Tab is one page of a Browser.
type Tab struct {
	t     testing.TB
	name  string
	ctx   context.Context
	log   *safeLog
	close func() // closes the tab and waits for its console reader; idempotent
}

// OpenTab opens url in a new tab of the browser and pipes the page's console
// and uncaught errors into t.Logf, prefixed with the tab's name. With
// newWindow the tab gets a window of its own and stays visible; without, it
// opens in the browser's main window, becomes its active tab and hides the
// others there, as in a desktop browser. The tab belongs to t: it closes in
// t's cleanup. An empty url leaves the tab at about:blank.
func (b *Browser) OpenTab(t testing.TB, name, url string, newWindow bool) *Tab {
	t.Helper()
	ctx, cancel := chromedp.NewContext(b.ctx, chromedp.WithNewWindow(newWindow))
	log := &safeLog{t: t}
	tab := &Tab{t: t, name: name, ctx: ctx, log: log}
	t.Cleanup(log.stop)
	if err := chromedp.Do(ctx); err != nil { // attaches the tab
		cancel()
		t.Fatalf("tab %s: opening: %v", name, err)
	}
	tab.pipeConsole(cancel)
	if url != "" {
		tab.Navigate(url)
	}
	return tab
}

// pipeConsole logs every console message and uncaught exception of the tab
// until the test's cleanup closes the tab with closeTab.
func (p *Tab) pipeConsole(closeTab func()) {
	msgs := chromedp.Console(p.ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for m, err := range msgs {
			if err != nil {
				return
			}
			text := m.Text
			if m.URL != "" && !strings.Contains(text, m.URL) {
				text += " (" + m.URL + ")"
			}
			if len(text) > 600 {
				text = text[:600] + "…"
			}
			p.log.Logf("[%s console.%s] %s", p.name, m.Type, text)
		}
	}()
	var once sync.Once
	p.close = func() {
		once.Do(func() {
			closeTab()
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				p.log.Logf("tab %s: the console reader did not stop", p.name)
			}
		})
	}
	p.t.Cleanup(p.close)
}

// Close closes the tab before the test ends (its cleanup does it otherwise).
func (p *Tab) Close() { p.close() }

// Navigate loads url in the tab and adds scripts that must run before the
// page's own (see InitScript).
func (p *Tab) Navigate(url string) {
	p.t.Helper()
	if err := chromedp.Do(p.ctx, chromedp.Navigate(url)); err != nil {
		p.t.Fatalf("tab %s: navigating to %s: %v", p.name, url, err)
	}
}

// InitScript makes the tab run script in every document it loads from now on,
// before the page's own scripts.
func (p *Tab) InitScript(script string) {
	p.t.Helper()
	if _, err := chromedp.Call(p.ctx, page.AddScriptToEvaluateOnNewDocument,
		page.AddScriptToEvaluateOnNewDocumentParams{Source: script}); err != nil {
		p.t.Fatalf("tab %s: adding an init script: %v", p.name, err)
	}
}

// Activate makes the tab the active one of its window, which hides the other
// tabs of that window.
func (p *Tab) Activate() {
	p.t.Helper()
	id := chromedp.FromContext(p.ctx).Target.TargetID
	if _, err := chromedp.CallBrowser(p.ctx, target.ActivateTarget, target.ActivateTargetParams{TargetID: id}); err != nil {
		p.t.Fatalf("tab %s: activating: %v", p.name, err)
	}
}

// Eval evaluates a JavaScript expression in the tab (awaiting a promise) and
// decodes its JSON value into T.
func Eval[T any](p *Tab, expr string) T {
	p.t.Helper()
	v, err := TryEval[T](p, expr)
	if err != nil {
		if len(expr) > 200 {
			expr = expr[:200] + "…"
		}
		p.t.Fatalf("tab %s: evaluating %q: %v", p.name, expr, err)
	}
	return v
}

// TryEval is Eval returning the error instead of failing the test.
func TryEval[T any](p *Tab, expr string) (T, error) {
	ctx, cancel := context.WithTimeout(p.ctx, 30*time.Second)
	defer cancel()
	return chromedp.Run(ctx, chromedp.Evaluate[T](expr, chromedp.EvalAwaitPromise))
}

// jsString quotes s as a JavaScript string literal.
func jsString(s string) string {
	b, _ := json.Marshal(s) // a string always marshals
	return string(b)
}

// errPageError reports a page in phase "error".
var errPageError = errors.New("e2e: the page reports an error")

// pageState is the part of window.peerlanPage the helpers read.
type pageState struct {
	Phase string `json:"phase"`
	Error string `json:"error"`
	Net   struct {
		State string `json:"state"`
		Error string `json:"error"`
	} `json:"net"`
	MAC     string         `json:"mac"`
	Timings map[string]int `json:"timings"`
	Frames  struct {
		ToLan   int `json:"toLan"`
		FromLan int `json:"fromLan"`
		Dropped int `json:"dropped"`
	} `json:"frames"`
}

const pageStateExpr = `(() => { const p = window.peerlanPage; if (!p) return null;
	return {phase: p.phase, error: p.error, net: p.net, mac: p.mac, timings: p.timings, frames: p.frames}; })()`

// State returns the page's current state, or a zero state with phase "" when
// the page has not defined its hooks yet.
func (p *Tab) State() pageState {
	p.t.Helper()
	st, err := TryEval[*pageState](p, pageStateExpr)
	if err != nil {
		p.t.Fatalf("tab %s: reading peerlanPage: %v", p.name, err)
	}
	if st == nil {
		return pageState{}
	}
	return *st
}

// WaitPhase waits until peerlanPage.phase is want and returns the state. It
// fails at once when the page reaches phase "error" (unless that is wanted),
// with the page's error and the tail of the guest console.
func (p *Tab) WaitPhase(want string, timeout time.Duration) pageState {
	p.t.Helper()
	deadline := time.Now().Add(timeout)
	var st pageState
	for {
		st = p.State()
		if st.Phase == want {
			return st
		}
		if st.Phase == "error" {
			p.t.Fatalf("tab %s: waiting for phase %q: %v: %s\n%s", p.name, want, errPageError, st.Error, p.consoleTail())
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("tab %s: phase is still %q after %v, want %q (net %+v)\n%s", p.name, st.Phase, timeout, want, st.Net, p.consoleTail())
		}
		p.sleep(pollInterval)
	}
}

// ConsoleText returns everything the guest printed (see peerlanPage.consoleText).
func (p *Tab) ConsoleText() string {
	p.t.Helper()
	return Eval[string](p, `window.peerlanPage ? window.peerlanPage.consoleText() : ""`)
}

// ConsoleLen returns the length, in UTF-16 units as JavaScript counts, of the
// console text so far: pass it to WaitConsoleAfter to look only at newer output.
func (p *Tab) ConsoleLen() int {
	p.t.Helper()
	return Eval[int](p, `window.peerlanPage ? window.peerlanPage.consoleText().length : 0`)
}

// WaitConsole waits until re matches the guest's console output and returns
// the match and its submatches.
func (p *Tab) WaitConsole(re *regexp.Regexp, timeout time.Duration) []string {
	p.t.Helper()
	return p.WaitConsoleAfter(0, re, timeout)
}

// WaitConsoleAfter is WaitConsole on the output after offset (see ConsoleLen;
// offsets hold while the console text stays under the page's 1 MiB bound).
// Remember that the guest's shell echoes what is typed: match the output of a
// command, not its text (e.g. type `echo $((6*7))ok`, wait for `42ok`).
func (p *Tab) WaitConsoleAfter(offset int, re *regexp.Regexp, timeout time.Duration) []string {
	p.t.Helper()
	deadline := time.Now().Add(timeout)
	expr := fmt.Sprintf(`window.peerlanPage ? window.peerlanPage.consoleText().slice(%d) : ""`, offset)
	for {
		text, err := TryEval[string](p, expr)
		if err != nil {
			p.t.Fatalf("tab %s: reading the console: %v", p.name, err)
		}
		if m := re.FindStringSubmatch(text); m != nil {
			return m
		}
		if st := p.State(); st.Phase == "error" {
			p.t.Fatalf("tab %s: waiting for %q on the console: %v: %s\n%s", p.name, re, errPageError, st.Error, p.consoleTail())
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("tab %s: %q did not appear on the guest console within %v\n%s", p.name, re, timeout, p.consoleTail())
		}
		p.sleep(pollInterval)
	}
}

// Type sends text to the guest's serial console as keystrokes.
func (p *Tab) Type(text string) {
	p.t.Helper()
	Eval[chromedp.Void](p, `window.peerlanPage.type(`+jsString(text)+`)`)
}

// Command types a shell command line (a newline is added) and waits for re
// in the output that follows, returning the match and its submatches.
func (p *Tab) Command(line string, re *regexp.Regexp, timeout time.Duration) []string {
	p.t.Helper()
	offset := p.ConsoleLen()
	p.Type(line + "\n")
	return p.WaitConsoleAfter(offset, re, timeout)
}

// promptRE is the guest shell's prompt at the start of a line.
var promptRE = regexp.MustCompile(`(?m)^guest:[^\n]*# $`)

// WaitShell waits for the guest to be ready and its shell to print a prompt.
func (p *Tab) WaitShell() pageState {
	p.t.Helper()
	st := p.WaitPhase("ready", BootTimeout)
	p.WaitConsole(promptRE, CommandTimeout)
	return st
}

// consoleTail returns the last lines of the guest console for a failure
// message.
func (p *Tab) consoleTail() string {
	text, err := TryEval[string](p, `window.peerlanPage ? window.peerlanPage.consoleText() : "(no peerlanPage)"`)
	if err != nil {
		return fmt.Sprintf("(guest console unreadable: %v)", err)
	}
	const keep = 2000
	if len(text) > keep {
		text = "…" + text[len(text)-keep:]
	}
	return "--- guest console (tail) ---\n" + text + "\n--- end ---"
}

// sleep waits d or until the tab's context ends.
func (p *Tab) sleep(d time.Duration) {
	select {
	case <-time.After(d):
	case <-p.ctx.Done():
		p.t.Fatalf("tab %s: %v", p.name, p.ctx.Err())
	}
}
