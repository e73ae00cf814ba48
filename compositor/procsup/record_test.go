package procsup

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
)

// TestReadRecord: a record is decoded; a missing one is fs.ErrNotExist, a
// larger or broken one ErrBadRecord, read no further than the bound.
func TestReadRecord(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	var v struct{ PID int }
	if err := ReadRecord(write("ok.json", []byte(`{"PID":42}`)), &v); err != nil || v.PID != 42 {
		t.Fatalf("ReadRecord = %v, %+v; want pid 42", err, v)
	}
	if err := ReadRecord(filepath.Join(dir, "none.json"), &v); !errors.Is(err, fs.ErrNotExist) || errors.Is(err, ErrBadRecord) {
		t.Errorf("missing record: %v; want not exist", err)
	}
	big := append([]byte(`{"PID":1`), bytes.Repeat([]byte(" "), MaxRecordSize)...)
	for name, b := range map[string][]byte{"big.json": append(big, '}'), "bad.json": []byte("{")} {
		if err := ReadRecord(write(name, b), &v); !errors.Is(err, ErrBadRecord) {
			t.Errorf("%s: %v; want ErrBadRecord", name, err)
		}
	}
}
