package wsrelay

import (
	"context"
	"fmt"
	"io"

	"github.com/gorilla/websocket"
)

// FramePort is one end of the frames a client carries: a TAP device here.
// Read returns one whole frame, Write takes one.
type FramePort interface {
	Read(b []byte) (int, error)
	Write(b []byte) (int, error)
}

// Bridge connects dev to the relay at url (ws://HOST/PATH) and copies frames
// both ways, one binary message per frame, until ctx ends or either side
// fails. A frame the port refuses is dropped, as on a wire.
func Bridge(ctx context.Context, url string, dev FramePort) error {
	d := websocket.Dialer{ReadBufferSize: 64 << 10, WriteBufferSize: 64 << 10}
	conn, _, err := d.DialContext(ctx, url, nil)
	if err != nil {
		return fmt.Errorf("wsrelay: dial %s: %w", url, err)
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()

	errc := make(chan error, 2)
	go func() { // port -> relay
		buf := make([]byte, 64<<10)
		for {
			n, err := dev.Read(buf)
			if err != nil {
				errc <- fmt.Errorf("wsrelay: read port: %w", err)
				return
			}
			if err := conn.WriteMessage(websocket.BinaryMessage, buf[:n]); err != nil {
				errc <- fmt.Errorf("wsrelay: send: %w", err)
				return
			}
		}
	}()
	go func() { // relay -> port
		buf := make([]byte, 64<<10)
		for {
			typ, rd, err := conn.NextReader()
			if err != nil {
				errc <- fmt.Errorf("wsrelay: receive: %w", err)
				return
			}
			n, err := io.ReadFull(rd, buf)
			if err != nil && err != io.ErrUnexpectedEOF && err != io.EOF {
				errc <- fmt.Errorf("wsrelay: receive: %w", err)
				return
			}
			if typ == websocket.BinaryMessage && n > 0 && n <= maxFrame {
				_, _ = dev.Write(buf[:n])
			}
		}
	}()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
		return nil
	}
}
