//go:build js

package peer

import "errors"

// nativeTransport: a browser has only its own RTCPeerConnection.
type nativeTransport struct{}

func newNativeTransport(*TransportConfig) (*nativeTransport, error) { return nil, nil }

func (*nativeTransport) offersNative() bool { return false }

var errNativeUnsupported = errors.New("peer: native sessions need a native peer")

func (m *Mesh) newNativeSession(*link, bool) (session, error) { return nil, errNativeUnsupported }
