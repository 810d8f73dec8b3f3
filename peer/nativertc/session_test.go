//go:build !js

package nativertc

import (
	"bytes"
	"sync"
	"testing"
	"time"
)

// pair is two sessions wired back to back, as the mesh's signaling would:
// the offerer's Params go to the answerer, which starts at once; the
// answer's go back; candidates trickle both ways.
type pair struct {
	a, b     *Session
	openA    chan *Channel
	openB    chan *Channel
	failures chan error
}

func newPair(t *testing.T, tweak func(*Config)) *pair {
	t.Helper()
	p := &pair{openA: make(chan *Channel, 1), openB: make(chan *Channel, 1), failures: make(chan error, 4)}
	mk := func(controlling bool) *Session {
		cert, err := NewCertificate()
		if err != nil {
			t.Fatal(err)
		}
		cfg := Config{Controlling: controlling, Certificate: cert, IncludeLoopback: true,
			InterfaceFilter: func(n string) bool { return n == "lo" }, Label: "test"}
		if tweak != nil {
			tweak(&cfg)
		}
		s, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}
	p.a, p.b = mk(true), mk(false)
	for _, s := range []struct {
		self, other *Session
		open        chan *Channel
	}{{p.a, p.b, p.openA}, {p.b, p.a, p.openB}} {
		other, open := s.other, s.open
		s.self.OnCandidate(func(c string) { _ = other.AddRemoteCandidate(c) })
		s.self.OnOpen(func(ch *Channel) { open <- ch })
		s.self.OnState(func(st State, err error) {
			if st == StateFailed {
				p.failures <- err
			}
		})
	}
	return p
}

// start exchanges parameters as an offer and an answer would.
func (p *pair) start(t *testing.T, mangleOffer func(*Params)) {
	t.Helper()
	<-p.a.Gathered()
	offer, err := p.a.LocalParams()
	if err != nil {
		t.Fatal(err)
	}
	if mangleOffer != nil {
		mangleOffer(&offer)
	}
	if err := p.b.Start(offer); err != nil {
		t.Fatal(err)
	}
	<-p.b.Gathered()
	answer, err := p.b.LocalParams()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.a.Start(answer); err != nil {
		t.Fatal(err)
	}
}

func (p *pair) wait(t *testing.T) (a, b *Channel) {
	t.Helper()
	timeout := time.After(20 * time.Second)
	for a == nil || b == nil {
		select {
		case a = <-p.openA:
		case b = <-p.openB:
		case err := <-p.failures:
			t.Fatalf("session failed: %v", err)
		case <-timeout:
			t.Fatal("channels did not open")
		}
	}
	return a, b
}

func TestSessionLargePackets(t *testing.T) {
	p := newPair(t, nil)
	p.start(t, nil)
	a, b := p.wait(t)
	for _, s := range []*Session{p.a, p.b} {
		if got := s.PacketSize(); got != DefaultMaxPacket {
			t.Errorf("packet size %d, want %d (loopback carries it)", got, DefaultMaxPacket)
		}
		if l, r, _, ok := s.SelectedPair(); !ok || l != "host" || r != "host" {
			t.Errorf("selected pair %q-%q %v, want host-host", l, r, ok)
		}
	}
	exchange(t, a, b)
	exchange(t, b, a)
}

func TestSessionStandardPacketsWhenOneSideSaysSo(t *testing.T) {
	p := newPair(t, nil)
	p.start(t, func(o *Params) { o.MaxPacket = 0 }) // an offerer that reads standard packets only
	a, b := p.wait(t)
	if got := p.b.PacketSize(); got != StandardPacketSize {
		t.Errorf("answerer sends %d-byte packets to a side that reads standard ones only", got)
	}
	exchange(t, a, b)
	exchange(t, b, a)
}

func TestSessionRefusesWrongCertificate(t *testing.T) {
	p := newPair(t, nil)
	other, err := NewCertificate()
	if err != nil {
		t.Fatal(err)
	}
	p.start(t, func(o *Params) { o.Fingerprint = Fingerprint(other) })
	select {
	case <-p.openA:
		t.Fatal("channel opened although the offerer's certificate does not match its fingerprint")
	case <-p.openB:
		t.Fatal("channel opened although the offerer's certificate does not match its fingerprint")
	case err := <-p.failures:
		t.Logf("failed as it should: %v", err)
	case <-time.After(20 * time.Second):
		t.Fatal("no failure reported")
	}
}

func TestParamsValidate(t *testing.T) {
	cert, _ := NewCertificate()
	good := Params{Ufrag: "abcd", Pwd: "0123456789012345678901", Fingerprint: Fingerprint(cert)}
	if err := good.Validate(); err != nil {
		t.Fatalf("good params refused: %v", err)
	}
	for name, mod := range map[string]func(*Params){
		"no ufrag":        func(p *Params) { p.Ufrag = "" },
		"long pwd":        func(p *Params) { p.Pwd = string(bytes.Repeat([]byte("x"), maxCredential+1)) },
		"md5 fingerprint": func(p *Params) { p.Fingerprint = "md5 AB:CD" },
		"many candidates": func(p *Params) { p.Candidates = make([]string, maxCandidates+1) },
		"long candidate":  func(p *Params) { p.Candidates = []string{string(bytes.Repeat([]byte("x"), maxCandidateLen+1))} },
	} {
		p := good
		mod(&p)
		if err := p.Validate(); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// exchange sends messages of every size class from one channel and checks
// that the other receives them whole (a loopback path loses none).
func exchange(t *testing.T, from, to *Channel) {
	t.Helper()
	sizes := []int{60, 1514, 9000, 65 << 10}
	var wg sync.WaitGroup
	wg.Add(1)
	errs := make(chan string, len(sizes))
	go func() {
		defer wg.Done()
		defer to.SetReadDeadline(time.Time{}) // ends pion's deadline timer
		buf := make([]byte, 128<<10)
		for _, want := range sizes {
			_ = to.SetReadDeadline(time.Now().Add(10 * time.Second))
			n, err := to.Read(buf)
			if err != nil {
				errs <- err.Error()
				return
			}
			if n != want || buf[0] != byte(want) || buf[n-1] != byte(want) {
				errs <- "wrong message"
				return
			}
		}
	}()
	for _, n := range sizes {
		msg := bytes.Repeat([]byte{byte(n)}, n)
		if _, err := from.Write(msg); err != nil {
			t.Fatal(err)
		}
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Fatal(e)
	}
}
