package main

import (
	"runtime"
	"runtime/debug"
)

// version describes the build for peerlan.version: the module version (or
// the VCS revision of a development build) and the Go release.
func version() string {
	v := "devel"
	info, ok := debug.ReadBuildInfo()
	if ok && info.Main.Version != "" && info.Main.Version != "(devel)" {
		v = info.Main.Version
	} else if ok {
		var rev, modified string
		for _, s := range info.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.modified":
				if s.Value == "true" {
					modified = "+dirty"
				}
			}
		}
		if len(rev) > 12 {
			rev = rev[:12]
		}
		if rev != "" {
			v = "devel-" + rev + modified
		}
	}
	return "peerlan " + v + " " + runtime.Version()
}
