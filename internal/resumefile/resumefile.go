// Package resumefile keeps a peer's resume token on disk, so that a peer
// restarted after a crash or kill -9 takes its id and address back at once:
// the signaling server hands the dead run's identity to the new connection
// instead of keeping it for the dead one until its keepalive and resume
// grace run out (for a gateway, until then the room has no gateway).
package resumefile

import (
	"errors"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
)

// File is one room's saved resume token. The file is a credential for the
// peer's identity in the room and is written 0600.
type File struct {
	path  string
	saved string
	log   *slog.Logger
}

// New is the token file for room in dir, named resume-ROOM. Room names
// cannot hold a path separator or start with a dot (proto.ValidRoomName).
func New(dir, room string, log *slog.Logger) *File {
	return &File{path: filepath.Join(dir, "resume-"+room), log: log}
}

// Load returns the saved token, or "" when there is none or it is
// unreadable (the peer then joins afresh). A nil File has none.
func (r *File) Load() string {
	if r == nil {
		return ""
	}
	b, err := os.ReadFile(r.path)
	if err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			r.log.Warn("cannot read the saved resume token; joining afresh", "file", r.path, "err", err)
		}
		return ""
	}
	r.saved = strings.TrimSpace(string(b))
	return r.saved
}

// Save writes tok if it changed, atomically; "" (no welcome yet) keeps the
// saved token. Failure costs only the fast restart, so it is logged, not
// returned. Save is not safe for concurrent use.
func (r *File) Save(tok string) {
	if tok == "" || tok == r.saved {
		return
	}
	err := os.MkdirAll(filepath.Dir(r.path), 0o700)
	if err == nil {
		tmp := r.path + ".tmp"
		if err = os.WriteFile(tmp, []byte(tok+"\n"), 0o600); err == nil {
			err = os.Rename(tmp, r.path)
		}
	}
	if err != nil {
		r.log.Warn("cannot save the resume token; a restart will join afresh or wait out the old run's grace period", "file", r.path, "err", err)
		return
	}
	r.saved = tok
}
