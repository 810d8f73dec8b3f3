// Package web holds the peerlan page and its built assets, embedded so that
// the signaling server binary serves everything from its own origin.
//
// The page (index.html, app.js, attach.mjs, style.css) is committed; dist/ is filled by
// `make build` (web/web.mk and guest/guest.mk): v86, xterm.js, the wasm peer,
// the guest image and the BIOS. A binary built before `make build` embeds
// only dist/README.md, and the page then says what is missing.
package web

import (
	"embed"
	"io/fs"
)

//go:embed index.html app.js attach.mjs style.css all:dist
var files embed.FS

// FS returns the page's files, rooted at the page's top folder.
func FS() fs.FS { return files }
