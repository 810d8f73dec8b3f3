package resumefile

import (
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
)

func TestResumeFile(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state") // created on the first save
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	r := New(dir, "lab-1", log)
	if got := r.Load(); got != "" {
		t.Fatalf("load without a file: %q", got)
	}
	r.Save("pl1.first")
	fi, err := os.Stat(filepath.Join(dir, "resume-lab-1"))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("token file mode %v, want 0600: it is a credential", fi.Mode().Perm())
	}
	if got := New(dir, "lab-1", log).Load(); got != "pl1.first" {
		t.Fatalf("a later run loads %q", got)
	}
	if got := New(dir, "lab-2", log).Load(); got != "" {
		t.Fatalf("another room's run loads %q", got)
	}
	r.Save("") // no token yet: keep the saved one
	r.Save("pl1.second")
	if got := New(dir, "lab-1", log).Load(); got != "pl1.second" {
		t.Fatalf("after an update a later run loads %q", got)
	}
	if _, err := os.Stat(filepath.Join(dir, "resume-lab-1.tmp")); !os.IsNotExist(err) {
		t.Errorf("temporary file left behind: %v", err)
	}
}
