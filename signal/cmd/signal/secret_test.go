package main

import (
	"bytes"
	"os"
	"path/filepath"
	"sync"
	"testing"
)

// TestSecretFileCreatedOnce: instances started at once on one missing
// -secret-file all end up with the one secret the file holds (before, each
// could keep its own, and a cluster's routes then refused each other).
func TestSecretFileCreatedOnce(t *testing.T) {
	file := filepath.Join(t.TempDir(), "secret")
	const n = 16
	secrets := make([][]byte, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { secrets[i], errs[i] = loadSecretFile(file, true) })
	}
	wg.Wait()
	onDisk, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("load %d: %v", i, errs[i])
		}
		if !bytes.Equal(secrets[i], bytes.TrimSpace(onDisk)) {
			t.Fatalf("load %d got %q, the file holds %q", i, secrets[i], onDisk)
		}
	}
	if left, _ := filepath.Glob(filepath.Join(filepath.Dir(file), ".secret-*")); len(left) != 0 {
		t.Fatalf("temporary files left: %v", left)
	}
}
