package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/pion/webrtc/v4"

	"github.com/peerlan/peerlan/peer"
	"github.com/peerlan/peerlan/signal/proto"
	"github.com/peerlan/peerlan/signal/signalclient"
)

// Join defaults and bounds.
const (
	defaultJoinTimeout = 20 * time.Second
	maxJoinTimeout     = 10 * time.Minute
)

// joinOptions are peerlan.join's options, validated.
type joinOptions struct {
	Signal     []string // one URL, or several instances of one cluster
	Room       string
	Token      string
	Relay      peer.RelayPolicy
	ICEServers []webrtc.ICEServer
	LogLevel   slog.Level
	Timeout    time.Duration
}

// optionNames are the keys join accepts, for the error about an unknown one.
var optionNames = []string{"signal", "room", "token", "relay", "iceServers", "logLevel", "timeoutMs"}

// parseOptions validates join's options, given as the JSON of the object
// JavaScript passed (JSON.stringify drops undefined and function values, so
// those count as absent). Every error names the option and what it wants.
func parseOptions(data []byte) (joinOptions, error) {
	o := joinOptions{Relay: peer.RelayAll, LogLevel: slog.LevelInfo, Timeout: defaultJoinTimeout}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(data, &raw); err != nil || raw == nil {
		return o, errors.New("options must be an object such as {signal: \"wss://host/signal\", room: \"name\"}")
	}
	var unknown []string
	for k := range raw {
		if !slices.Contains(optionNames, k) {
			unknown = append(unknown, k)
		}
	}
	if len(unknown) > 0 {
		sort.Strings(unknown)
		return o, fmt.Errorf("unknown option %q (options are %s)", unknown[0], strings.Join(optionNames, ", "))
	}

	var err error
	if o.Signal, err = signalOption(raw); err != nil {
		return o, err
	}
	if o.Room, err = stringOption(raw, "room", true); err != nil {
		return o, err
	}
	if !proto.ValidRoomName(o.Room) {
		return o, fmt.Errorf("option room %q: want 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit", o.Room)
	}
	if o.Token, err = stringOption(raw, "token", false); err != nil {
		return o, err
	}
	relay, err := stringOption(raw, "relay", false)
	if err != nil {
		return o, err
	}
	if o.Relay, err = peer.ParseRelayPolicy(relay); err != nil {
		return o, fmt.Errorf("option relay %q: want \"all\" (default), \"relay\" or \"direct\"", relay)
	}
	level, err := stringOption(raw, "logLevel", false)
	if err != nil {
		return o, err
	}
	if level != "" {
		if err := o.LogLevel.UnmarshalText([]byte(level)); err != nil {
			return o, fmt.Errorf("option logLevel %q: want \"debug\", \"info\" (default), \"warn\" or \"error\"", level)
		}
	}
	if v, ok := present(raw, "timeoutMs"); ok {
		var ms float64
		if err := json.Unmarshal(v, &ms); err != nil || ms <= 0 || time.Duration(ms)*time.Millisecond > maxJoinTimeout {
			return o, fmt.Errorf("option timeoutMs %s: want a number of milliseconds above 0 and up to %d", v, maxJoinTimeout.Milliseconds())
		}
		o.Timeout = time.Duration(ms * float64(time.Millisecond))
	}
	if v, ok := present(raw, "iceServers"); ok {
		if o.ICEServers, err = parseICEServers(v); err != nil {
			return o, err
		}
	}
	return o, nil
}

// signalOption reads option signal: the signaling server's WebSocket URL,
// or the URLs of several instances of one cluster as an array (or one
// comma-separated string), at most signalclient.MaxURLs.
func signalOption(raw map[string]json.RawMessage) ([]string, error) {
	v, ok := present(raw, "signal")
	if !ok {
		return nil, errors.New("option signal is required")
	}
	var list string
	var urls []string
	if err := json.Unmarshal(v, &list); err != nil {
		if err := json.Unmarshal(v, &urls); err != nil {
			return nil, fmt.Errorf("option signal: want a string or an array of strings, got %s", v)
		}
		if len(urls) == 0 {
			return nil, errors.New("option signal is required: the array is empty")
		}
		// The mesh takes the list as one comma-separated string.
		for i, u := range urls {
			if strings.Contains(u, ",") {
				return nil, fmt.Errorf("option signal[%d] %q: a URL cannot hold a comma (write it %%2C)", i, u)
			}
		}
		list = strings.Join(urls, ",")
	}
	if list == "" {
		return nil, errors.New("option signal is required")
	}
	urls, err := signalclient.ParseURLs(list)
	if err != nil {
		return nil, fmt.Errorf("option signal: %s; want the signaling server's WebSocket URL, or an array of them", strings.TrimPrefix(err.Error(), "signal: "))
	}
	return urls, nil
}

// present returns the raw value of key unless it is absent or null.
func present(raw map[string]json.RawMessage, key string) (json.RawMessage, bool) {
	v, ok := raw[key]
	if !ok || bytes.Equal(bytes.TrimSpace(v), []byte("null")) {
		return nil, false
	}
	return v, true
}

func stringOption(raw map[string]json.RawMessage, key string, required bool) (string, error) {
	v, ok := present(raw, key)
	if !ok {
		if required {
			return "", fmt.Errorf("option %s is required", key)
		}
		return "", nil
	}
	var s string
	if err := json.Unmarshal(v, &s); err != nil {
		return "", fmt.Errorf("option %s: want a string, got %s", key, v)
	}
	if required && s == "" {
		return "", fmt.Errorf("option %s is required", key)
	}
	return s, nil
}

// parseICEServers reads RTCIceServer dictionaries: {urls, username,
// credential}, urls a string or an array of strings.
func parseICEServers(v json.RawMessage) ([]webrtc.ICEServer, error) {
	var list []struct {
		URLs       json.RawMessage `json:"urls"`
		Username   string          `json:"username"`
		Credential string          `json:"credential"`
	}
	if err := json.Unmarshal(v, &list); err != nil {
		return nil, fmt.Errorf("option iceServers: want an array of {urls, username, credential} (RTCIceServer): %v", err)
	}
	servers := make([]webrtc.ICEServer, 0, len(list))
	for i, s := range list {
		var urls []string
		var one string
		if err := json.Unmarshal(s.URLs, &one); err == nil {
			urls = []string{one}
		} else if err := json.Unmarshal(s.URLs, &urls); err != nil {
			return nil, fmt.Errorf("option iceServers[%d].urls: want a string or an array of strings", i)
		}
		if len(urls) == 0 {
			return nil, fmt.Errorf("option iceServers[%d].urls is empty", i)
		}
		for _, u := range urls {
			if !strings.HasPrefix(u, "stun:") && !strings.HasPrefix(u, "stuns:") &&
				!strings.HasPrefix(u, "turn:") && !strings.HasPrefix(u, "turns:") {
				return nil, fmt.Errorf("option iceServers[%d].urls: %q is not a stun:, stuns:, turn: or turns: URL", i, u)
			}
		}
		server := webrtc.ICEServer{URLs: urls, Username: s.Username}
		if s.Credential != "" {
			server.Credential = s.Credential
		}
		servers = append(servers, server)
	}
	return servers, nil
}

// servers names the signaling URLs for an error message.
func (o joinOptions) servers() string {
	if len(o.Signal) == 1 {
		return o.Signal[0]
	}
	return "any of " + strings.Join(o.Signal, ", ")
}
