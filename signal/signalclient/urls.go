package signalclient

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
)

// MaxURLs bounds how many signaling URLs a Client rotates through: enough
// for the instances of any cluster, few enough that a round of dials to
// servers that are all down stays short.
const MaxURLs = 16

// ParseURLs splits Config.URL's form, one ws:// or wss:// URL or several
// separated by commas (spaces around them are ignored), and validates each
// URL as New does. Its errors name the bad URL. A comma inside a URL must be
// written %2C.
func ParseURLs(list string) ([]string, error) {
	if strings.TrimSpace(list) == "" {
		return nil, errors.New("signal: a server URL (ws://host[:port]/path or wss://…) is required")
	}
	urls := strings.Split(list, ",")
	for i := range urls {
		urls[i] = strings.TrimSpace(urls[i])
	}
	return urls, checkURLs(urls)
}

// checkURLs validates a list of signaling URLs: at least one, at most
// MaxURLs, each ws:// or wss:// with a host, none twice.
func checkURLs(urls []string) error {
	if len(urls) == 0 {
		return errors.New("signal: a server URL (ws://host[:port]/path or wss://…) is required")
	}
	if len(urls) > MaxURLs {
		return fmt.Errorf("signal: %d server URLs; at most %d", len(urls), MaxURLs)
	}
	for i, s := range urls {
		which := ""
		if len(urls) > 1 {
			which = fmt.Sprintf(" (%d of %d)", i+1, len(urls))
		}
		if s == "" {
			return fmt.Errorf("signal: server URL%s is empty", which)
		}
		u, err := url.Parse(s)
		if err != nil || (u.Scheme != "ws" && u.Scheme != "wss") || u.Host == "" {
			return fmt.Errorf("signal: server URL %q%s must be ws://host[:port]/path or wss://…", s, which)
		}
		for _, earlier := range urls[:i] {
			if earlier == s {
				return fmt.Errorf("signal: server URL %q is listed twice", s)
			}
		}
	}
	return nil
}
