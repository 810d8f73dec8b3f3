package main

import (
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/peerlan/peerlan/peer"
)

func TestParseOptions(t *testing.T) {
	o, err := parseOptions([]byte(`{"signal":"wss://example.org/signal","room":"r-1","token":"t","relay":"relay",
		"iceServers":[{"urls":"stun:example.org:3478"},{"urls":["turn:example.org?transport=udp"],"username":"u","credential":"c"}],
		"logLevel":"debug","timeoutMs":1500}`))
	if err != nil {
		t.Fatal(err)
	}
	if len(o.Signal) != 1 || o.Signal[0] != "wss://example.org/signal" || o.Room != "r-1" || o.Token != "t" || o.Relay != peer.RelayOnly ||
		o.LogLevel != slog.LevelDebug || o.Timeout != 1500*time.Millisecond {
		t.Errorf("parsed %+v", o)
	}
	if len(o.ICEServers) != 2 || o.ICEServers[0].URLs[0] != "stun:example.org:3478" || o.ICEServers[0].Credential != nil ||
		o.ICEServers[1].Username != "u" || o.ICEServers[1].Credential != "c" {
		t.Errorf("ICE servers %+v", o.ICEServers)
	}

	for _, list := range []string{`["ws://a/signal","wss://b:8443/signal"]`, `"ws://a/signal, wss://b:8443/signal"`} {
		o, err = parseOptions([]byte(`{"signal":` + list + `,"room":"a"}`))
		if err != nil {
			t.Fatal(err)
		}
		if want := []string{"ws://a/signal", "wss://b:8443/signal"}; !slices.Equal(o.Signal, want) {
			t.Errorf("signal %s parsed as %q, want %q", list, o.Signal, want)
		}
	}

	o, err = parseOptions([]byte(`{"signal":"ws://127.0.0.1:8080/signal","room":"a","token":null,"relay":null}`))
	if err != nil {
		t.Fatal(err)
	}
	if o.Relay != peer.RelayAll || o.Timeout != defaultJoinTimeout || o.LogLevel != slog.LevelInfo {
		t.Errorf("defaults: %+v", o)
	}
}

func TestParseOptionsErrors(t *testing.T) {
	for _, c := range []struct{ json, want string }{
		{`null`, "options must be an object"},
		{`[1]`, "options must be an object"},
		{`{"room":"a"}`, "option signal is required"},
		{`{"signal":"","room":"a"}`, "option signal is required"},
		{`{"signal":42,"room":"a"}`, "option signal: want a string or an array of strings"},
		{`{"signal":"https://h/signal","room":"a"}`, `option signal: server URL "https://h/signal" must be ws://`},
		{`{"signal":"ws:///signal","room":"a"}`, "WebSocket URL"},
		{`{"signal":[],"room":"a"}`, "option signal is required"},
		{`{"signal":["ws://a/s",7],"room":"a"}`, "want a string or an array of strings"},
		{`{"signal":["ws://a/s","ws://b/s,x"],"room":"a"}`, `option signal[1] "ws://b/s,x": a URL cannot hold a comma`},
		{`{"signal":["ws://a/s","http://b/s"],"room":"a"}`, `"http://b/s" (2 of 2)`},
		{`{"signal":["ws://a/s","ws://a/s"],"room":"a"}`, "listed twice"},
		{`{"signal":"ws://h/s"}`, "option room is required"},
		{`{"signal":"ws://h/s","room":"a b"}`, `option room "a b"`},
		{`{"signal":"ws://h/s","room":"a","relay":"never"}`, `option relay "never"`},
		{`{"signal":"ws://h/s","room":"a","logLevel":"loud"}`, `option logLevel "loud"`},
		{`{"signal":"ws://h/s","room":"a","timeoutMs":0}`, "option timeoutMs"},
		{`{"signal":"ws://h/s","room":"a","timeoutMs":"5"}`, "option timeoutMs"},
		{`{"signal":"ws://h/s","room":"a","timeoutMs":1e12}`, "option timeoutMs"},
		{`{"signal":"ws://h/s","room":"a","iceServers":{}}`, "option iceServers: want an array"},
		{`{"signal":"ws://h/s","room":"a","iceServers":[{"urls":[]}]}`, "iceServers[0].urls is empty"},
		{`{"signal":"ws://h/s","room":"a","iceServers":[{"urls":3}]}`, "iceServers[0].urls: want a string"},
		{`{"signal":"ws://h/s","room":"a","Room":"b"}`, `unknown option "Room"`},
	} {
		_, err := parseOptions([]byte(c.json))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("parseOptions(%s): %v, want an error mentioning %q", c.json, err, c.want)
		}
	}
}
