package pam

/*
#include <stddef.h>

extern char **environ;

static size_t hd_environ_len(void) {
	size_t n = 0;
	if (environ != NULL)
		while (environ[n] != NULL)
			n++;
	return n;
}
*/
import "C"

import (
	"bufio"
	"bytes"
	"os"
	"strings"
	"unsafe"
)

// procStatusFields are the lines of /proc/self/status a PAM module may
// change for good and the next transaction in the process would run
// under: credentials and supplementary groups, capabilities, no_new_privs
// and seccomp, the umask, and the main thread's signal mask and the
// process's signal dispositions.
var procStatusFields = []string{
	"Umask:", "Uid:", "Gid:", "Groups:", "NoNewPrivs:", "Seccomp:",
	"CapInh:", "CapPrm:", "CapEff:", "CapBnd:", "CapAmb:",
	"SigBlk:", "SigIgn:", "SigCgt:",
}

// procState describes what of the helper process a module may change and
// leave changed after pam_end (a setuid, setenv, umask, chdir, chroot,
// setrlimit or signal() it does not undo): the process must be as the
// helper started, by this description, to run another account check, or
// one check's leftovers would be the next user's (see helper.result).
// It is called on the main thread, whose signal mask it reads.
func procState() string {
	var b strings.Builder
	if st, err := os.ReadFile("/proc/self/status"); err == nil {
		sc := bufio.NewScanner(bytes.NewReader(st))
		for sc.Scan() {
			for _, f := range procStatusFields {
				if strings.HasPrefix(sc.Text(), f) {
					b.WriteString(sc.Text())
					b.WriteByte('\n')
				}
			}
		}
	} else {
		b.WriteString("status: " + err.Error() + "\n")
	}
	for _, l := range []string{"/proc/self/cwd", "/proc/self/root"} {
		t, err := os.Readlink(l)
		if err != nil {
			t = err.Error()
		}
		b.WriteString(l + " " + t + "\n")
	}
	if lim, err := os.ReadFile("/proc/self/limits"); err == nil {
		b.Write(lim)
	}
	// The C environment, which a module's setenv changes (Go's os.Environ
	// is a copy taken at start).
	if n := C.hd_environ_len(); n > 0 {
		for _, e := range unsafe.Slice(C.environ, n) {
			b.WriteString(C.GoString(e))
			b.WriteByte(0)
		}
	}
	return b.String()
}
