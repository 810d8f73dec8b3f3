package userspace

import (
	"net/netip"
	"sync"
	"time"
)

// Directions of the per-guest limit.
const (
	dirOut = 0 // guest → gateway
	dirIn  = 1 // gateway → guest
)

// idleBucket is how long an unused bucket is kept, as the kernel ruleset's
// rate sets time out their elements.
const idleBucket = time.Minute

// limiter is a token bucket per guest address and direction: rate bytes
// per second, holding at most one second's worth (the burst nftables'
// "limit rate over N bytes/second" allows). Only addresses of the subnet get
// a bucket, so there are at most as many as the room has guests.
type limiter struct {
	rate   float64
	subnet netip.Prefix

	mu        sync.Mutex // guards the buckets and lastSweep
	buckets   [2]map[netip.Addr]*bucket
	lastSweep time.Time
}

type bucket struct {
	tokens float64
	last   time.Time
}

func newLimiter(bytesPerSec uint64, subnet netip.Prefix) *limiter {
	return &limiter{
		rate:    float64(bytesPerSec),
		subnet:  subnet,
		buckets: [2]map[netip.Addr]*bucket{{}, {}},
	}
}

// allow takes n bytes from guest's bucket for dir; false when it holds fewer.
func (l *limiter) allow(dir int, guest netip.Addr, n int, now time.Time) bool {
	if !l.subnet.Contains(guest) {
		return true
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Sub(l.lastSweep) > idleBucket {
		l.sweep(now)
	}
	m := l.buckets[dir]
	b := m[guest]
	if b == nil {
		b = &bucket{tokens: l.rate, last: now}
		m[guest] = b
	}
	if dt := now.Sub(b.last).Seconds(); dt > 0 {
		b.tokens = min(l.rate, b.tokens+dt*l.rate)
		b.last = now
	}
	if b.tokens < float64(n) {
		return false
	}
	b.tokens -= float64(n)
	return true
}

// sweep forgets buckets idle for idleBucket; a full bucket is what a new
// one starts with, so nothing is lost.
func (l *limiter) sweep(now time.Time) {
	l.lastSweep = now
	for _, m := range l.buckets {
		for a, b := range m {
			if now.Sub(b.last) > idleBucket {
				delete(m, a)
			}
		}
	}
}
