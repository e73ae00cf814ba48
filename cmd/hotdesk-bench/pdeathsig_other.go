//go:build !linux

package main

import "os/exec"

// setPdeathsig is Linux-only; elsewhere the child stops when its stdin closes.
func setPdeathsig(*exec.Cmd) {}
