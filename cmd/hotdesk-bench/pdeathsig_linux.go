package main

import (
	"os/exec"
	"syscall"
)

// setPdeathsig makes the kernel kill the etcd child if the bench dies.
func setPdeathsig(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
