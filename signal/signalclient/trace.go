package signalclient

import "context"

// Trace holds hooks that report what a Client's Run does to code that does
// not hold the Client (a peer.Mesh makes its own), carried in Run's context
// as net/http/httptrace carries an HTTP client's. Nil hooks are skipped.
// Hooks run on Run's goroutine and must return quickly: the client reads
// nothing from the server meanwhile.
type Trace struct {
	// Joined is called when the server at url (one of Config's URLs) has
	// welcomed the client, before the Welcome event is emitted.
	Joined func(url string)
}

type traceKey struct{}

// WithTrace returns a context carrying t; a Client whose Run is given it, or
// a context derived from it, calls t's hooks.
func WithTrace(ctx context.Context, t *Trace) context.Context {
	return context.WithValue(ctx, traceKey{}, t)
}

func traceFrom(ctx context.Context) *Trace {
	t, _ := ctx.Value(traceKey{}).(*Trace)
	return t
}
