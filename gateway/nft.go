package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"strings"
	"time"
)

// nftTimeout bounds one nft invocation; loading our table takes milliseconds.
const nftTimeout = 10 * time.Second

// Output bounds: a listing of our table is a few KiB; stderr only carries a
// message for the error we wrap.
const (
	maxNftStdout = 4 << 20
	maxNftStderr = 8 << 10
)

// nft runs the nftables CLI. Only this file executes it, and only against
// tables it names explicitly.
type nft struct {
	path string // resolved absolute path
}

// lookupNft resolves the nft binary, failing with errNftMissing.
func lookupNft(name string) (nft, error) {
	p, err := exec.LookPath(name)
	if err != nil {
		return nft{}, fmt.Errorf("%w: %w", errNftMissing, err)
	}
	return nft{path: p}, nil
}

// run executes nft with args, feeding stdin when non-empty.
func (n nft) run(ctx context.Context, stdin string, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, nftTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, n.path, args...)
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	stdout := &boundedBuffer{max: maxNftStdout}
	stderr := &boundedBuffer{max: maxNftStderr}
	cmd.Stdout, cmd.Stderr = stdout, stderr
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(stderr.String())
		return nil, fmt.Errorf("%w: nft %s: %w: %s", errNft, strings.Join(args, " "), err, msg)
	}
	if stdout.overflow {
		return nil, fmt.Errorf("%w: nft %s: output larger than %d bytes", errNft, strings.Join(args, " "), maxNftStdout)
	}
	return stdout.Bytes(), nil
}

// load applies a ruleset as one transaction.
func (n nft) load(ctx context.Context, ruleset string) error {
	_, err := n.run(ctx, ruleset, "-f", "-")
	return err
}

// tableExists reports whether inet table name exists.
func (n nft) tableExists(ctx context.Context, name string) (bool, error) {
	out, err := n.run(ctx, "", "-j", "list", "tables", "inet")
	if err != nil {
		return false, err
	}
	objs, err := parseNftJSON(out)
	if err != nil {
		return false, err
	}
	for _, o := range objs {
		if o.Table != nil && o.Table.Family == "inet" && o.Table.Name == name {
			return true, nil
		}
	}
	return false, nil
}

// deleteTable removes inet table name if it exists. It never touches other tables.
func (n nft) deleteTable(ctx context.Context, name string) (bool, error) {
	ok, err := n.tableExists(ctx, name)
	if err != nil || !ok {
		return false, err
	}
	_, err = n.run(ctx, "", "delete", "table", "inet", name)
	return err == nil, err
}

// listTable returns the JSON objects of inet table name.
func (n nft) listTable(ctx context.Context, name string) ([]nftObject, error) {
	out, err := n.run(ctx, "", "-j", "list", "table", "inet", name)
	if err != nil {
		return nil, err
	}
	return parseNftJSON(out)
}

// counters reads the named counters of inet table name.
func (n nft) counters(ctx context.Context, name string) (map[string]nftCounter, error) {
	out, err := n.run(ctx, "", "-j", "list", "counters", "table", "inet", name)
	if err != nil {
		return nil, err
	}
	return parseNftCounters(out, name)
}

// chains lists every chain of every table (for the forward-policy warning).
func (n nft) chains(ctx context.Context) ([]nftChain, error) {
	out, err := n.run(ctx, "", "-j", "list", "chains")
	if err != nil {
		return nil, err
	}
	objs, err := parseNftJSON(out)
	if err != nil {
		return nil, err
	}
	var chains []nftChain
	for _, o := range objs {
		if o.Chain != nil {
			chains = append(chains, *o.Chain)
		}
	}
	return chains, nil
}

// nftObject is one element of libnftables' JSON array; exactly one field is set
// for the kinds we read, the others stay nil.
type nftObject struct {
	Table   *nftTable   `json:"table,omitempty"`
	Chain   *nftChain   `json:"chain,omitempty"`
	Counter *nftCounter `json:"counter,omitempty"`
	Set     *nftSet     `json:"set,omitempty"`
	Rule    *nftRule    `json:"rule,omitempty"`
}

type nftTable struct {
	Family string `json:"family"`
	Name   string `json:"name"`
}

type nftChain struct {
	Family string `json:"family"`
	Table  string `json:"table"`
	Name   string `json:"name"`
	Hook   string `json:"hook,omitempty"`
	Policy string `json:"policy,omitempty"`
}

type nftCounter struct {
	Family  string `json:"family"`
	Table   string `json:"table"`
	Name    string `json:"name"`
	Packets uint64 `json:"packets"`
	Bytes   uint64 `json:"bytes"`
}

type nftSet struct {
	Family string `json:"family"`
	Table  string `json:"table"`
	Name   string `json:"name"`
}

type nftRule struct {
	Family string            `json:"family"`
	Table  string            `json:"table"`
	Chain  string            `json:"chain"`
	Expr   []json.RawMessage `json:"expr"`
}

// parseNftJSON decodes `nft -j` output: {"nftables": [ {...}, ... ]}.
func parseNftJSON(data []byte) ([]nftObject, error) {
	var doc struct {
		Nftables []nftObject `json:"nftables"`
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&doc); err != nil {
		return nil, fmt.Errorf("%w: decoding JSON output: %w", errNft, err)
	}
	if doc.Nftables == nil {
		return nil, fmt.Errorf("%w: JSON output has no \"nftables\" array", errNft)
	}
	return doc.Nftables, nil
}

// parseNftCounters picks the named counters of one inet table.
func parseNftCounters(data []byte, table string) (map[string]nftCounter, error) {
	objs, err := parseNftJSON(data)
	if err != nil {
		return nil, err
	}
	out := make(map[string]nftCounter)
	for _, o := range objs {
		if c := o.Counter; c != nil && c.Family == "inet" && c.Table == table {
			out[c.Name] = *c
		}
	}
	return out, nil
}

// boundedBuffer keeps at most max bytes and remembers that it dropped some.
type boundedBuffer struct {
	bytes.Buffer
	max      int
	overflow bool
}

func (b *boundedBuffer) Write(p []byte) (int, error) {
	room := b.max - b.Len()
	if len(p) > room {
		b.overflow = true
		if room > 0 {
			b.Buffer.Write(p[:room])
		}
		return len(p), nil
	}
	return b.Buffer.Write(p)
}
