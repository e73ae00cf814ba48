// Package atomicfile replaces files so that a reader, or the next start after
// a crash or power loss, sees either the old content or the new, never a torn
// file: state records, keystores, certificates and keys are written with it.
package atomicfile

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
)

// Write replaces path with data, mode perm. It writes a temporary file in
// the same directory, syncs it, renames it over path and syncs the directory
// (a file system that cannot sync a directory is not an error). The
// directory must exist. On error path is unchanged and no temporary file is
// left behind.
func Write(path string, data []byte, perm os.FileMode) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("atomicfile: %w", err)
	}
	tmp := f.Name()
	fail := func(err error) error {
		f.Close()
		os.Remove(tmp)
		return fmt.Errorf("atomicfile: write %s: %w", path, err)
	}
	if err := f.Chmod(perm); err != nil {
		return fail(err)
	}
	if _, err := f.Write(data); err != nil {
		return fail(err)
	}
	if err := f.Sync(); err != nil {
		return fail(err)
	}
	if err := f.Close(); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("atomicfile: write %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("atomicfile: write %s: %w", path, err)
	}
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}

// WriteMkdir is Write into a directory that it first creates, with any
// missing parents, of mode 0700 (before the process umask) if it does not
// exist; an existing directory is left as it is. For private state:
// keystores, certificates and keys.
func WriteMkdir(path string, data []byte, perm os.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("atomicfile: %w", err)
	}
	return Write(path, data, perm)
}

// WriteJSON is WriteMkdir of v as indented JSON (two spaces) ending in a
// newline: the private state files a person may read (keystores, learned
// members). An error marshalling v leaves path unchanged.
func WriteJSON(path string, v any, perm os.FileMode) error {
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("atomicfile: %s: %w", path, err)
	}
	return WriteMkdir(path, append(data, '\n'), perm)
}
