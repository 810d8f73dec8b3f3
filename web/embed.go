// Package web holds the peerlan page and its built assets, embedded so that
// the signaling server binary serves everything from its own origin.
package web

import (
	"embed"
	"io/fs"
)

//go:embed index.html all:dist
var files embed.FS

// FS returns the page's files, rooted at the page's top folder.
func FS() fs.FS { return files }
