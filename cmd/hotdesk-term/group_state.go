package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"

	"github.com/hotdesk/hotdesk/internal/atomicfile"
	"github.com/hotdesk/hotdesk/proto"
)

// membersFile is the file in the terminal's state directory that keeps the
// members learned from the last Welcome, so that a terminal booting while
// its configured brokers are down can still reach a member it learned.
const membersFile = "members.json"

// maxMembersFileSize bounds what loading reads: MaxMembers members with
// room to spare.
const maxMembersFileSize = 64 << 10

// membersFormat is the version of the members file.
const membersFormat = 1

// memberState is the members file: the learned members and the trust
// anchors they were learned under. A file written under other anchors (the
// terminal was given other pins or another CA) is ignored: the members of
// a group the terminal no longer trusts are not trusted either.
type memberState struct {
	Format  int           `json:"format"`
	Anchors string        `json:"anchors"` // hex SHA-256 of the configured anchors
	Members []savedMember `json:"members"`
}

type savedMember struct {
	ServerID    string `json:"server_id"`
	Addr        string `json:"addr"`
	Fingerprint string `json:"fingerprint"` // sha256:HEX
	Draining    bool   `json:"draining,omitempty"`
}

// anchorsID identifies a configuration's trust anchors: the pins (in any
// order) or the CA file's bytes.
func anchorsID(pins [][]byte, caPEM []byte) string {
	sorted := slices.Clone(pins)
	slices.SortFunc(sorted, bytes.Compare)
	h := sha256.New()
	for _, p := range sorted {
		h.Write([]byte("pin:"))
		h.Write(p)
	}
	if caPEM != nil {
		h.Write([]byte("ca:"))
		h.Write(caPEM)
	}
	return fmt.Sprintf("%x", h.Sum(nil))
}

// persist makes g keep its learned members in dir (created 0700 if
// absent) under anchors, and loads what an earlier run kept there. A file
// that is missing is not an error; one that is unreadable, too large,
// writable by others, owned by another user, malformed, or written under
// other anchors is ignored and reported (it is replaced at the next
// learn). Members that fail learn's checks are dropped.
func (g *group) persist(dir, anchors string) (loaded int, err error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return 0, fmt.Errorf("group: state dir: %w", err)
	}
	g.mu.Lock()
	g.statePath, g.anchors = filepath.Join(dir, membersFile), anchors
	g.mu.Unlock()
	ms, err := readMembers(g.statePath, anchors)
	if err != nil || len(ms) == 0 {
		return 0, err
	}
	g.learn(ms)
	return len(g.Members()), nil
}

func readMembers(path, anchors string) ([]proto.Member, error) {
	b, err := atomicfile.ReadPrivate(path, maxMembersFileSize, 0o022, true)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("group: members file ignored: %w", err)
	}
	var st2 memberState
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&st2); err != nil {
		return nil, fmt.Errorf("group: members file %s: %w", path, err)
	}
	switch {
	case st2.Format != membersFormat:
		return nil, fmt.Errorf("group: members file %s: format %d; want %d", path, st2.Format, membersFormat)
	case st2.Anchors != anchors:
		return nil, fmt.Errorf("group: members file %s was written under other trust anchors; ignored", path)
	case len(st2.Members) > proto.MaxMembers:
		return nil, fmt.Errorf("group: members file %s: %d members; limit %d", path, len(st2.Members), proto.MaxMembers)
	}
	var ms []proto.Member
	for _, m := range st2.Members {
		fp, err := proto.ParseFingerprint(m.Fingerprint)
		if err != nil {
			continue // learn drops the rest of what is invalid
		}
		ms = append(ms, proto.Member{ServerID: m.ServerID, Addr: m.Addr, Fingerprint: fp, Draining: m.Draining})
	}
	return ms, nil
}

// save writes the learned members to the state file (atomically, 0600,
// with atomicfile.WriteJSON), if persist was called.
func (g *group) save() error {
	g.mu.Lock()
	path, anchors := g.statePath, g.anchors
	st := memberState{Format: membersFormat, Anchors: anchors, Members: []savedMember{}}
	for _, m := range g.members {
		st.Members = append(st.Members, savedMember{ServerID: m.ServerID, Addr: m.Addr,
			Fingerprint: proto.FormatFingerprint(m.Fingerprint), Draining: m.Draining})
	}
	g.mu.Unlock()
	if path == "" {
		return nil
	}
	if err := atomicfile.WriteJSON(path, st, 0o600); err != nil {
		return fmt.Errorf("group: members file: %w", err)
	}
	return nil
}
