// Package rlimit carries a login session's resource limits (what
// pam_limits set from /etc/security/limits.conf) from the process that
// opened the session to the desktop started for it.
//
// Contract:
//   - A Limit names its resource as prlimit(1) does ("nofile", "nproc",
//     "as", …: Names); Infinity is RLIM_INFINITY.
//   - Current reads this process's limits; Changed lists what differs
//     between two readings (what a PAM session changed).
//   - Within clamps limits to hard ceilings (an unprivileged process can
//     only lower its hard limits); Arg renders one for prlimit(1).
package rlimit

import (
	"fmt"
	"strconv"

	"golang.org/x/sys/unix"
)

// Infinity is RLIM_INFINITY: no limit.
const Infinity = ^uint64(0)

// Limit is one resource limit.
type Limit struct {
	Resource string `cbor:"1,keyasint" json:"resource"` // prlimit(1)'s name: "nofile", "nproc", …
	Soft     uint64 `cbor:"2,keyasint" json:"soft"`
	Hard     uint64 `cbor:"3,keyasint" json:"hard"`
}

// resources are the limits Current reads, by prlimit(1)'s long option
// names, in its order.
var resources = []struct {
	name string
	res  int
}{
	{"as", unix.RLIMIT_AS},
	{"core", unix.RLIMIT_CORE},
	{"cpu", unix.RLIMIT_CPU},
	{"data", unix.RLIMIT_DATA},
	{"fsize", unix.RLIMIT_FSIZE},
	{"locks", unix.RLIMIT_LOCKS},
	{"memlock", unix.RLIMIT_MEMLOCK},
	{"msgqueue", unix.RLIMIT_MSGQUEUE},
	{"nice", unix.RLIMIT_NICE},
	{"nofile", unix.RLIMIT_NOFILE},
	{"nproc", unix.RLIMIT_NPROC},
	{"rss", unix.RLIMIT_RSS},
	{"rtprio", unix.RLIMIT_RTPRIO},
	{"rttime", unix.RLIMIT_RTTIME},
	{"sigpending", unix.RLIMIT_SIGPENDING},
	{"stack", unix.RLIMIT_STACK},
}

// Names lists the resources a Limit may name, in prlimit(1)'s order.
func Names() []string {
	out := make([]string, len(resources))
	for i, r := range resources {
		out[i] = r.name
	}
	return out
}

// Known reports whether name is a resource a Limit may name.
func Known(name string) bool {
	for _, r := range resources {
		if r.name == name {
			return true
		}
	}
	return false
}

// Current reads every limit of this process.
func Current() ([]Limit, error) {
	out := make([]Limit, 0, len(resources))
	for _, r := range resources {
		var rl unix.Rlimit
		if err := unix.Getrlimit(r.res, &rl); err != nil {
			return nil, fmt.Errorf("rlimit: %s: %w", r.name, err)
		}
		out = append(out, Limit{Resource: r.name, Soft: rl.Cur, Hard: rl.Max})
	}
	return out, nil
}

// Changed lists the limits of after that before has with other values (or
// does not have).
func Changed(before, after []Limit) []Limit {
	was := make(map[string]Limit, len(before))
	for _, l := range before {
		was[l.Resource] = l
	}
	var out []Limit
	for _, l := range after {
		if was[l.Resource] != l {
			out = append(out, l)
		}
	}
	return out
}

// Within returns l with its hard limit at most ceiling's hard limit (what a
// process whose limits are ceiling, unprivileged, may set) and its soft
// limit at most its hard one.
func Within(l Limit, ceiling Limit) Limit {
	l.Hard = min(l.Hard, ceiling.Hard)
	l.Soft = min(l.Soft, l.Hard)
	return l
}

// Arg renders l as prlimit(1)'s option, e.g. "--nofile=1024:4096".
func Arg(l Limit) string {
	return "--" + l.Resource + "=" + value(l.Soft) + ":" + value(l.Hard)
}

func value(v uint64) string {
	if v == Infinity {
		return "unlimited"
	}
	return strconv.FormatUint(v, 10)
}
