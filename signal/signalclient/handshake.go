package signalclient

import "fmt"

// HTTP statuses by number: the client does not link net/http in the browser.
const (
	statusNotFound        = 404
	statusRequestTimeout  = 408
	statusTooManyRequests = 429
)

// HandshakeError is an HTTP answer where a WebSocket upgrade was expected:
// something listens at the URL, but not a signaling endpoint (a wrong path,
// a web server, a proxy that refuses WebSockets) or not now (5xx).
type HandshakeError struct {
	URL        string
	StatusCode int
	Status     string
	Location   string // of a redirect
}

func (e *HandshakeError) Error() string {
	const hint = "bin/signal serves its WebSocket at /signal unless started with -path"
	switch {
	case e.StatusCode == statusNotFound:
		return fmt.Sprintf("signal: %s: 404 Not Found: no signaling endpoint at this path (%s)", e.URL, hint)
	case e.StatusCode >= 300 && e.StatusCode < 400 && e.Location != "":
		return fmt.Sprintf("signal: %s redirects (%s) to %s: use the final ws:// or wss:// URL", e.URL, e.Status, e.Location)
	case e.StatusCode >= 200 && e.StatusCode < 300:
		return fmt.Sprintf("signal: %s answered HTTP %s without upgrading to a WebSocket: not a signaling endpoint (%s)", e.URL, e.Status, hint)
	}
	return fmt.Sprintf("signal: %s answered HTTP %s instead of upgrading to a WebSocket", e.URL, e.Status)
}

// wrongEndpoint reports whether retrying the URL cannot help: anything but
// the server errors and rate limits that a restart or a pause clears.
func (e *HandshakeError) wrongEndpoint() bool {
	return e.StatusCode < 500 && e.StatusCode != statusTooManyRequests && e.StatusCode != statusRequestTimeout
}
