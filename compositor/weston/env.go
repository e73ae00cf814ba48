package weston

import (
	"fmt"
	"strings"
)

// checkEnv bounds and validates Spec.Env.
func checkEnv(env []string) error {
	if len(env) > maxEnvEntries {
		return fmt.Errorf("%w: %d env entries (max %d)", ErrInvalidSpec, len(env), maxEnvEntries)
	}
	for i, kv := range env {
		k, _, ok := strings.Cut(kv, "=")
		switch {
		case len(kv) > maxEnvEntry:
			return fmt.Errorf("%w: env entry %d longer than %d bytes", ErrInvalidSpec, i, maxEnvEntry)
		case !ok || !envKeyRe.MatchString(k):
			return fmt.Errorf("%w: env entry %d is not KEY=VALUE", ErrInvalidSpec, i)
		case strings.IndexByte(kv, 0) >= 0:
			return fmt.Errorf("%w: env entry %d holds NUL", ErrInvalidSpec, i)
		case k == "XDG_RUNTIME_DIR":
			return fmt.Errorf("%w: env may not set %s", ErrInvalidSpec, k)
		}
	}
	return nil
}

// buildEnv is weston's whole environment; later entries win.
func buildEnv(home, usr, runDir string, extra []string) []string {
	env := []string{
		"HOME=" + home,
		"USER=" + usr,
		"LOGNAME=" + usr,
		"PATH=/usr/local/bin:/usr/bin:/bin",
		"LANG=C.UTF-8",
	}
	env = append(env, extra...)
	env = append(env, "XDG_RUNTIME_DIR="+runDir)
	// Dedupe, keeping the last value of each key in first-seen order.
	idx := make(map[string]int, len(env))
	out := env[:0:0]
	for _, kv := range env {
		k, _, _ := strings.Cut(kv, "=")
		if i, ok := idx[k]; ok {
			out[i] = kv
			continue
		}
		idx[k] = len(out)
		out = append(out, kv)
	}
	return out
}

func hasConfigFlag(args []string) bool {
	for _, a := range args {
		if a == "-c" || a == "--config" || strings.HasPrefix(a, "--config=") || (strings.HasPrefix(a, "-c") && len(a) > 2) {
			return true
		}
	}
	return false
}
