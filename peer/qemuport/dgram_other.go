//go:build !unix

package qemuport

import (
	"errors"
	"log/slog"
)

// listenDgram needs unix datagram sockets with MSG_TRUNC and MSG_DONTWAIT.
func listenDgram(path string, log *slog.Logger) (Port, error) {
	return nil, errors.New("qemuport: dgram mode needs a unix system")
}
