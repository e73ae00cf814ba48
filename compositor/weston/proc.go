package weston

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// procStat is the part of /proc/<pid>/stat the backend relies on.
type procStat struct {
	state      byte   // field 3: R, S, D, Z, X, ...
	pgrp       int    // field 5
	startTicks uint64 // field 22: start time in clock ticks since boot
}

// readProcStat reads /proc/<pid>/stat below procRoot. A missing process is
// reported as an error satisfying errors.Is(err, os.ErrNotExist).
func readProcStat(procRoot string, pid int) (procStat, error) {
	f, err := os.Open(procRoot + "/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return procStat{}, err
	}
	defer f.Close()
	// The stat line is well under 1 KiB; the comm field is at most 16 bytes.
	buf, err := io.ReadAll(io.LimitReader(f, 4096))
	if err != nil {
		return procStat{}, err
	}
	return parseProcStat(buf)
}

// parseProcStat parses a /proc/<pid>/stat line. The comm field (2) may hold
// spaces and parentheses, so fields are counted from the last ')'.
func parseProcStat(buf []byte) (procStat, error) {
	i := bytes.LastIndexByte(buf, ')')
	if i < 0 {
		return procStat{}, errors.New("malformed stat: no comm field")
	}
	fields := strings.Fields(string(buf[i+1:]))
	// fields[0] is field 3 (state); field N is fields[N-3].
	if len(fields) < 20 {
		return procStat{}, fmt.Errorf("malformed stat: %d fields", len(fields)+2)
	}
	if len(fields[0]) != 1 {
		return procStat{}, fmt.Errorf("malformed stat: state %q", fields[0])
	}
	pgrp, err := strconv.Atoi(fields[2])
	if err != nil {
		return procStat{}, fmt.Errorf("malformed stat: pgrp: %w", err)
	}
	start, err := strconv.ParseUint(fields[19], 10, 64)
	if err != nil {
		return procStat{}, fmt.Errorf("malformed stat: starttime: %w", err)
	}
	return procStat{state: fields[0][0], pgrp: pgrp, startTicks: start}, nil
}

// checkProc reports whether pid is still the process that started at
// startTicks: nil if so, ErrProcessGone if no live process has that pid (a
// zombie counts as gone), ErrPIDReused if another process has it now.
func checkProc(procRoot string, pid int, startTicks uint64) error {
	st, err := readProcStat(procRoot, pid)
	if errors.Is(err, os.ErrNotExist) || errors.Is(err, syscall.ESRCH) {
		return ErrProcessGone
	}
	if err != nil {
		return fmt.Errorf("weston: read stat of pid %d: %w", pid, err)
	}
	if st.startTicks != startTicks {
		return ErrPIDReused
	}
	if st.state == 'Z' || st.state == 'X' || st.state == 'x' {
		return ErrProcessGone
	}
	return nil
}

// readBootID returns the kernel's boot id, which changes on every boot.
func readBootID(procRoot string) (string, error) {
	b, err := os.ReadFile(procRoot + "/sys/kernel/random/boot_id")
	if err != nil {
		return "", err
	}
	id := strings.TrimSpace(string(b))
	if id == "" {
		return "", errors.New("empty boot id")
	}
	return id, nil
}

// signalGroup sends sig to the process group pgid; a group that no longer
// exists is not an error.
func signalGroup(pgid int, sig syscall.Signal) error {
	if pgid <= 1 {
		// Never signal "every process" (-1) or our own group (0).
		return fmt.Errorf("weston: refusing to signal process group %d", pgid)
	}
	err := syscall.Kill(-pgid, sig)
	if errors.Is(err, syscall.ESRCH) {
		return nil
	}
	return err
}

// groupAlive reports whether any process of process group pgid is still
// running (zombies, whose descriptors are already closed, do not count).
func groupAlive(procRoot string, pgid int) bool {
	ents, err := os.ReadDir(procRoot)
	if err != nil {
		return false
	}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		st, err := readProcStat(procRoot, pid)
		if err != nil || st.pgrp != pgid {
			continue
		}
		if st.state != 'Z' && st.state != 'X' && st.state != 'x' {
			return true
		}
	}
	return false
}
