package adminapi

import (
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

func TestAllowPeer(t *testing.T) {
	const self, admin = 990, 4242
	tests := []struct {
		name     string
		uid, gid int
		groups   []int
		adminGID int
		want     bool
	}{
		{"root", 0, 0, nil, -1, true},
		{"root with any gid", 0, 1000, nil, admin, true},
		{"daemon uid", self, self, nil, -1, true},
		{"other user, no admin group", 1000, 1000, []int{admin}, -1, false},
		{"other user, primary gid is admin", 1000, admin, nil, admin, true},
		{"other user, supplementary admin", 1000, 1000, []int{4, 24, admin}, admin, true},
		{"other user, not in admin group", 1000, 1000, []int{4, 24}, admin, false},
		{"other user, no groups", 1000, 1000, nil, admin, false},
		{"gid 0 is not root", 1000, 0, []int{0}, -1, false},
		{"root group as admin group", 1000, 0, nil, 0, true},
		{"nobody", 65534, 65534, []int{65534}, admin, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := allowPeer(tt.uid, tt.gid, tt.groups, self, tt.adminGID); got != tt.want {
				t.Errorf("allowPeer(uid %d, gid %d, groups %v, admin %d) got = %v; want %v",
					tt.uid, tt.gid, tt.groups, tt.adminGID, got, tt.want)
			}
		})
	}
}

func TestParseStatus(t *testing.T) {
	tests := []struct {
		name       string
		status     string
		wantUID    int
		wantGroups []int
		wantErr    bool
	}{
		{"typical", "Name:\tbash\nUmask:\t0022\nState:\tS (sleeping)\nUid:\t1000\t1001\t1000\t1001\nGid:\t1000\t1000\t1000\t1000\nFDSize:\t256\nGroups:\t4 24 27 4242 \nNStgid:\t1\n",
			1001, []int{4, 24, 27, 4242}, false},
		{"no groups", "Uid:\t0\t0\t0\t0\nGroups:\t\n", 0, nil, false},
		{"missing groups line", "Uid:\t0\t0\t0\t0\n", 0, nil, true},
		{"missing uid line", "Groups:\t1\n", 0, nil, true},
		{"bad group", "Uid:\t0\t0\t0\t0\nGroups:\t1 x\n", 0, nil, true},
		{"short uid", "Uid:\t0\nGroups:\t\n", 0, nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			uid, groups, err := parseStatus([]byte(tt.status))
			if (err != nil) != tt.wantErr {
				t.Fatalf("parseStatus() error got = %v; want error %v", err, tt.wantErr)
			}
			if err != nil {
				return
			}
			if uid != tt.wantUID || !reflect.DeepEqual(groups, tt.wantGroups) {
				t.Errorf("parseStatus() got = %d %v; want %d %v", uid, groups, tt.wantUID, tt.wantGroups)
			}
		})
	}

	// The real /proc agrees with the process's own view.
	groups, err := procGroups("/proc", os.Getpid(), os.Geteuid())
	if err != nil {
		t.Fatalf("procGroups(self): %v", err)
	}
	want, err := os.Getgroups()
	if err != nil {
		t.Fatal(err)
	}
	if len(want) == 0 {
		want = nil
	}
	if !reflect.DeepEqual(groups, want) {
		t.Errorf("procGroups(self) got = %v; want %v", groups, want)
	}
	if _, err := procGroups("/proc", os.Getpid(), os.Geteuid()+1); err == nil {
		t.Errorf("procGroups with the wrong uid got = nil error; want an error")
	}
}

// decide reads supplementary groups from procRoot only when needed.
func TestDecideWithProcGroups(t *testing.T) {
	const admin = 4242
	proc := t.TempDir()
	writeStatus := func(pid int, status string) {
		dir := filepath.Join(proc, fmt.Sprint(pid))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "status"), []byte(status), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	writeStatus(100, "Uid:\t1000\t1000\t1000\t1000\nGroups:\t27 4242\n")
	writeStatus(101, "Uid:\t1000\t1000\t1000\t1000\nGroups:\t27\n")
	writeStatus(102, "Uid:\t2000\t2000\t2000\t2000\nGroups:\t4242\n") // pid reused by someone else

	tests := []struct {
		name        string
		pid, uid    int
		adminGID    int
		wantAllowed bool
		wantErr     bool
	}{
		{"member via /proc", 100, 1000, admin, true, false},
		{"not a member", 101, 1000, admin, false, false},
		{"pid now belongs to another uid", 102, 1000, admin, false, true},
		{"process gone", 103, 1000, admin, false, true},
		{"no admin group: /proc not consulted", 100, 1000, -1, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// decide reads only these fields (no backend is needed).
			s := &Server{adminGID: tt.adminGID, selfUID: 990, procRoot: proc}
			p := &peer{PID: tt.pid, UID: tt.uid, GID: tt.uid, Known: true}
			s.decide(p)
			if p.Allowed != tt.wantAllowed || (p.Err != nil) != tt.wantErr {
				t.Errorf("decide() got = allowed %v, err %v; want allowed %v, error %v", p.Allowed, p.Err, tt.wantAllowed, tt.wantErr)
			}
		})
	}
}
