package peer

import "errors"

// ErrDropped is returned by Port.Write when the port dropped the frame because
// it could not keep up. It is not fatal: the port remains usable.
var ErrDropped = errors.New("peer: frame dropped")
