//go:build js

package peer

import (
	"errors"
	"syscall/js"
	"time"

	"github.com/pion/webrtc/v4"
)

const defaultMaxBuffered = BrowserMaxBuffered

// TransportConfig holds native WebRTC settings; the browser decides these
// itself, so in the browser it is empty and ignored.
type TransportConfig struct{}

type webrtcAPI = webrtc.API

func newWebRTCAPI(*TransportConfig, RelayPolicy) (*webrtcAPI, error) {
	return webrtc.NewAPI(), nil
}

var errNoPair = errors.New("peer: no selected candidate pair yet")

// selectedPair reads the selected candidate pair from the browser's
// getStats(): the transport's selectedCandidatePairId, that pair's RTT and
// its two candidates' types.
func selectedPair(pc *webrtc.PeerConnection) (pairInfo, error) {
	report, err := await(pc.JSValue().Call("getStats"))
	if err != nil {
		return pairInfo{}, err
	}
	byID := map[string]js.Value{}
	var selected string
	var nominated js.Value
	each := js.FuncOf(func(_ js.Value, args []js.Value) any {
		s := args[0]
		id := s.Get("id").String()
		byID[id] = s
		switch s.Get("type").String() {
		case "transport":
			if v := s.Get("selectedCandidatePairId"); v.Type() == js.TypeString {
				selected = v.String()
			}
		case "candidate-pair":
			if s.Get("nominated").Truthy() && s.Get("state").String() == "succeeded" {
				nominated = s
			}
		}
		return nil
	})
	report.Call("forEach", each)
	each.Release()
	pair, ok := byID[selected]
	if !ok {
		if nominated.IsUndefined() {
			return pairInfo{}, errNoPair
		}
		pair = nominated
	}
	candType := func(key string) string {
		c, ok := byID[pair.Get(key).String()]
		if !ok {
			return ""
		}
		return c.Get("candidateType").String()
	}
	p := pairInfo{local: candType("localCandidateId"), remote: candType("remoteCandidateId")}
	if rtt := pair.Get("currentRoundTripTime"); rtt.Type() == js.TypeNumber {
		p.rtt = time.Duration(rtt.Float() * float64(time.Second))
	}
	return p, nil
}

// await blocks the calling goroutine until promise settles.
func await(promise js.Value) (js.Value, error) {
	type result struct {
		v   js.Value
		err error
	}
	ch := make(chan result, 1)
	var ok, fail js.Func
	ok = js.FuncOf(func(_ js.Value, args []js.Value) any {
		ch <- result{v: args[0]}
		return nil
	})
	fail = js.FuncOf(func(_ js.Value, args []js.Value) any {
		ch <- result{err: errors.New(args[0].Call("toString").String())}
		return nil
	})
	promise.Call("then", ok, fail)
	r := <-ch
	ok.Release()
	fail.Release()
	return r.v, r.err
}
