package main

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"
	"time"
)

// brokerUser is the account the harness runs its hotdeskd processes as when
// it is itself root: hotdeskd refuses to start desktops as root (the
// shipped defaults never run a desktop as uid 0), and a group under test
// should run the way a site runs it.
const brokerUser = "hdchaos"

// unprivileged prepares dir for brokers running as brokerUser and returns
// their credential and the directory holding copies of the binaries they
// run (the originals may sit below a directory that user cannot enter), and
// whether it created brokerUser (then the caller removes it with
// removeBrokerUser once the brokers are gone). It returns a nil credential
// and bin unchanged when the harness is not root.
func unprivileged(dir, bin, self string) (cred *syscall.Credential, cbin, cself string, created bool, err error) {
	if os.Geteuid() != 0 {
		return nil, bin, self, false, nil
	}
	u, err := user.Lookup(brokerUser)
	if err != nil {
		out, aerr := exec.Command("useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", brokerUser).CombinedOutput()
		if aerr != nil {
			return nil, "", "", false, fmt.Errorf("chaos: create user %s: %v: %s", brokerUser, aerr, out)
		}
		created = true
		if u, err = user.Lookup(brokerUser); err != nil {
			return nil, "", "", created, fmt.Errorf("chaos: user %s: %w", brokerUser, err)
		}
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	if err := os.Chown(dir, uid, gid); err != nil {
		return nil, "", "", created, fmt.Errorf("chaos: %w", err)
	}
	cbin = filepath.Join(dir, "bin")
	if err := os.Mkdir(cbin, 0o755); err != nil {
		return nil, "", "", created, fmt.Errorf("chaos: %w", err)
	}
	for _, src := range []string{filepath.Join(bin, "hotdeskd"), self} {
		if err := copyExecutable(src, filepath.Join(cbin, filepath.Base(src))); err != nil {
			return nil, "", "", created, err
		}
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, cbin, filepath.Join(cbin, filepath.Base(self)), created, nil
}

// removeBrokerUser deletes brokerUser (created by unprivileged), retrying
// briefly while its last processes exit; a failure is only logged.
func removeBrokerUser(logf func(string, ...any)) {
	var out []byte
	var err error
	for attempt := 1; attempt <= 10; attempt++ {
		if out, err = exec.Command("userdel", brokerUser).CombinedOutput(); err == nil {
			return
		}
		if _, lerr := user.Lookup(brokerUser); lerr != nil {
			return
		}
		time.Sleep(time.Duration(attempt) * 100 * time.Millisecond)
	}
	logf("could not remove user %s: %v: %s", brokerUser, err, out)
}

func copyExecutable(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("chaos: copy %s: %w", src, err)
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	if err != nil {
		return fmt.Errorf("chaos: copy %s: %w", src, err)
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return fmt.Errorf("chaos: copy %s: %w", src, err)
	}
	return out.Close()
}
