package main

import (
	"errors"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
)

// resumeFile keeps the gateway's resume token in the state directory, so
// that a gateway restarted after a crash takes its id and .1 back at once:
// the server replaces the dead run's connection instead of holding the
// gateway role for it until its keepalive and resume grace run out. The file
// is a credential for the room's gateway role and is written 0600.
type resumeFile struct {
	path  string
	saved string
	log   *slog.Logger
}

// newResumeFile is the token file for room in dir. Room names cannot hold a
// path separator or start with a dot (signal.ValidRoomName).
func newResumeFile(dir, room string, log *slog.Logger) *resumeFile {
	return &resumeFile{path: filepath.Join(dir, "resume-"+room), log: log}
}

// load returns the saved token, or "" when there is none or it is unreadable
// (the gateway then joins afresh).
func (r *resumeFile) load() string {
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

// save writes tok if it changed, atomically. Failure costs only the fast
// restart, so it is logged, not returned.
func (r *resumeFile) save(tok string) {
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
		r.log.Warn("cannot save the resume token; a restart will wait for the old gateway's grace period", "file", r.path, "err", err)
		return
	}
	r.saved = tok
}
