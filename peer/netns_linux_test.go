package peer

import (
	"runtime"
	"testing"

	"golang.org/x/sys/unix"
)

// inSmallMTUNamespace runs f on a thread moved into a new network
// namespace whose loopback is up with the given MTU; sockets f opens live
// there. The thread is discarded afterwards (never unlocked), so no other
// goroutine runs in that namespace. Skips without CAP_SYS_ADMIN.
func inSmallMTUNamespace(t *testing.T, mtu int, f func()) {
	t.Helper()
	done := make(chan struct{})
	var skip string
	go func() {
		defer close(done)
		runtime.LockOSThread() // not unlocked: the thread dies with the goroutine
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			skip = "cannot make a network namespace: " + err.Error()
			return
		}
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM, 0)
		if err != nil {
			t.Error(err)
			return
		}
		defer unix.Close(fd)
		ifr, err := unix.NewIfreq("lo")
		if err != nil {
			t.Error(err)
			return
		}
		ifr.SetUint32(uint32(mtu))
		if err := unix.IoctlIfreq(fd, unix.SIOCSIFMTU, ifr); err != nil {
			t.Errorf("set loopback MTU: %v", err)
			return
		}
		ifr.SetUint16(unix.IFF_UP)
		if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
			t.Errorf("bring loopback up: %v", err)
			return
		}
		f()
	}()
	<-done
	if skip != "" {
		t.Skip(skip)
	}
}
