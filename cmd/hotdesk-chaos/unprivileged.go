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
)

// brokerUser is the account the harness runs its hotdeskd processes as when
// it is itself root: hotdeskd refuses to start desktops as root (the
// shipped defaults never run a desktop as uid 0), and a group under test
// should run the way a site runs it.
const brokerUser = "hdchaos"

// unprivileged prepares dir for brokers running as brokerUser and returns
// their credential and the directory holding copies of the binaries they
// run (the originals may sit below a directory that user cannot enter). It
// returns a nil credential and bin unchanged when the harness is not root.
func unprivileged(dir, bin, self string) (*syscall.Credential, string, string, error) {
	if os.Geteuid() != 0 {
		return nil, bin, self, nil
	}
	u, err := user.Lookup(brokerUser)
	if err != nil {
		out, aerr := exec.Command("useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", brokerUser).CombinedOutput()
		if aerr != nil {
			return nil, "", "", fmt.Errorf("chaos: create user %s: %v: %s", brokerUser, aerr, out)
		}
		if u, err = user.Lookup(brokerUser); err != nil {
			return nil, "", "", fmt.Errorf("chaos: user %s: %w", brokerUser, err)
		}
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	if err := os.Chown(dir, uid, gid); err != nil {
		return nil, "", "", fmt.Errorf("chaos: %w", err)
	}
	cbin := filepath.Join(dir, "bin")
	if err := os.Mkdir(cbin, 0o755); err != nil {
		return nil, "", "", fmt.Errorf("chaos: %w", err)
	}
	for _, src := range []string{filepath.Join(bin, "hotdeskd"), self} {
		if err := copyExecutable(src, filepath.Join(cbin, filepath.Base(src))); err != nil {
			return nil, "", "", err
		}
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, cbin, filepath.Join(cbin, filepath.Base(self)), nil
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
