//go:build js && wasm

package main

import (
	"bytes"
	"context"
	"log/slog"
	"sync"
	"syscall/js"
)

// consoleHandler writes slog records to the browser console, one line each
// in slog's text format, through the console method of the record's level
// (debug, info, warn, error), so the devtools' level filter works. The time
// is left out: the console stamps messages itself.
type consoleHandler struct {
	level slog.Leveler
	out   *consoleOut
	text  slog.Handler // formats into out.buf
}

type consoleOut struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	console js.Value
}

func newConsoleHandler(level slog.Leveler) *consoleHandler {
	out := &consoleOut{console: js.Global().Get("console")}
	return &consoleHandler{level: level, out: out, text: slog.NewTextHandler(&out.buf, &slog.HandlerOptions{
		Level: slog.LevelDebug, // filtered in Enabled
		ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			if len(groups) == 0 && a.Key == slog.TimeKey {
				return slog.Attr{}
			}
			return a
		},
	})}
}

func (h *consoleHandler) Enabled(_ context.Context, l slog.Level) bool {
	return l >= h.level.Level()
}

func (h *consoleHandler) Handle(ctx context.Context, r slog.Record) error {
	method := "log"
	switch {
	case r.Level >= slog.LevelError:
		method = "error"
	case r.Level >= slog.LevelWarn:
		method = "warn"
	case r.Level < slog.LevelInfo:
		method = "debug"
	}
	h.out.mu.Lock()
	defer h.out.mu.Unlock()
	h.out.buf.Reset()
	if err := h.text.Handle(ctx, r); err != nil {
		return err
	}
	line := bytes.TrimRight(h.out.buf.Bytes(), "\n")
	h.out.console.Call(method, "peerlan: "+string(line))
	return nil
}

func (h *consoleHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &consoleHandler{level: h.level, out: h.out, text: h.text.WithAttrs(attrs)}
}

func (h *consoleHandler) WithGroup(name string) slog.Handler {
	return &consoleHandler{level: h.level, out: h.out, text: h.text.WithGroup(name)}
}
