// Package promtext reads Prometheus text exposition, for tests and benchmarks
// that check what a peerlan daemon reports on /metrics.
package promtext

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Samples maps a series, written as in the exposition (`name` or
// `name{label="value",...}` with labels in the order served), to its value.
type Samples map[string]float64

// Parse reads text exposition format.
func Parse(r io.Reader) (Samples, error) {
	s := make(Samples)
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		// The value follows the last space outside the label set; an
		// optional timestamp may follow it.
		end := strings.LastIndexByte(line, '}')
		rest := line
		series := ""
		if end >= 0 {
			series, rest = line[:end+1], strings.TrimSpace(line[end+1:])
		} else {
			var ok bool
			series, rest, ok = strings.Cut(line, " ")
			if !ok {
				return nil, fmt.Errorf("promtext: malformed line %q", line)
			}
		}
		val, _, _ := strings.Cut(strings.TrimSpace(rest), " ")
		v, err := strconv.ParseFloat(val, 64)
		if err != nil {
			return nil, fmt.Errorf("promtext: line %q: %w", line, err)
		}
		s[series] = v
	}
	return s, sc.Err()
}

// Scrape fetches and parses url.
func Scrape(url string) (Samples, error) {
	c := http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("promtext: GET %s: %s", url, resp.Status)
	}
	return Parse(resp.Body)
}

// Sum adds the values of every series of the metric name, whatever labels.
func (s Samples) Sum(name string) float64 {
	var t float64
	for k, v := range s {
		if k == name || strings.HasPrefix(k, name+"{") {
			t += v
		}
	}
	return t
}
