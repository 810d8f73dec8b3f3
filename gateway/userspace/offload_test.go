package userspace

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// TestOffload: with Config.Offload a real guest kernel behind an offload
// TAP moves TCP streams both ways as super-frames (the lab counts them),
// and the bytes arrive intact.
func TestOffload(t *testing.T) {
	if _, err := exec.LookPath("curl"); err != nil {
		t.Skip("needs curl")
	}
	body := bytes.Repeat([]byte("peerlan offload 0123456789abcdef"), 1<<17) // 4 MiB
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				req, err := http.ReadRequest(bufio.NewReader(c))
				if err != nil {
					return
				}
				if req.Method == http.MethodPut {
					got, _ := io.ReadAll(req.Body)
					ok := bytes.Equal(got, body)
					fmt.Fprintf(c, "HTTP/1.0 200 OK\r\n\r\n%d %v", len(got), ok)
					return
				}
				fmt.Fprintf(c, "HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n", len(body))
				c.Write(body)
			}()
		}
	}()
	url := fmt.Sprintf("http://%v:%d/", internetHost, ln.Addr().(*net.TCPAddr).Port)
	l := newGuestLab(t, Config{Offload: true, translate: toLoopback})
	if !l.g.Offloads() {
		t.Fatal("Offloads false with Config.Offload")
	}

	out, err := l.run(60*time.Second, "curl", "-sS", "--max-time", "45", url)
	if err != nil || out != string(body) {
		t.Fatalf("download: %v: %d bytes, want %d intact", err, len(out), len(body))
	}
	if l.superOut.Load() == 0 {
		t.Error("download: the gateway sent no super-frames")
	}

	file := filepath.Join(t.TempDir(), "up")
	if err := os.WriteFile(file, body, 0o644); err != nil {
		t.Fatal(err)
	}
	out, err = l.run(60*time.Second, "curl", "-sS", "--max-time", "45", "-T", file, url)
	if want := strconv.Itoa(len(body)) + " true"; err != nil || out != want {
		t.Fatalf("upload: %v: server says %q, want %q", err, out, want)
	}
	if l.superIn.Load() == 0 {
		t.Error("upload: the guest sent no super-frames")
	}
	if n := drops(l.g, DropMalformed) + drops(l.g, DropTooBig) + drops(l.g, DropQueue); n != 0 {
		t.Errorf("%d frames dropped: %v", n, l.g.Stats())
	}
	t.Logf("super-frames: %d in, %d out", l.superIn.Load(), l.superOut.Load())
}
