package procsup

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
)

// MaxRecordSize bounds a session record (session.json) a backend reads
// back at adoption: a state directory's file is not trusted to be small.
const MaxRecordSize = 64 << 10

// ErrBadRecord wraps every ReadRecord error but the file's opening: a
// record too large, or not JSON of v's shape.
var ErrBadRecord = errors.New("procsup: bad session record")

// ReadRecord decodes the JSON record at path into v, reading at most
// MaxRecordSize bytes of it. An error opening it (os.ErrNotExist…) is
// returned as is; anything else wraps ErrBadRecord.
func ReadRecord(path string, v any) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, MaxRecordSize+1))
	if err != nil {
		return fmt.Errorf("%w: %v", ErrBadRecord, err)
	}
	if len(b) > MaxRecordSize {
		return fmt.Errorf("%w: larger than %d bytes", ErrBadRecord, MaxRecordSize)
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("%w: %v", ErrBadRecord, err)
	}
	return nil
}
