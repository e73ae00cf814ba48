package pam

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/hotdesk/hotdesk/auth"
	"github.com/hotdesk/hotdesk/proto"
)

func frame(t *testing.T, m *wireMsg) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := writeMsg(&b, m); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func rawFrame(payload []byte) []byte {
	return append(binary.BigEndian.AppendUint32(nil, uint32(len(payload))), payload...)
}

func TestReadMsgRefuses(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		in   []byte
		want error
	}{
		{"two messages", rawFrame([]byte{0xa2, 0x03, 0xa0, 0x05, 0xa0}), ErrProtocol},
		{"no message", rawFrame([]byte{0xa0}), ErrProtocol},
		{"unknown key", rawFrame([]byte{0xa1, 0x09, 0xa0}), ErrProtocol},
		{"duplicate key", rawFrame([]byte{0xa2, 0x05, 0xa0, 0x05, 0xa0}), ErrProtocol},
		{"not cbor", rawFrame([]byte{0xff}), ErrProtocol},
		{"oversized", binary.BigEndian.AppendUint32(nil, proto.MaxFrame+1), proto.ErrFrameTooLarge},
		{"truncated", rawFrame([]byte{0xa1, 0x05})[:5], proto.ErrMalformed},
		// {4: {1: true, 6: ["A=1", null]}}: a null is no environment entry
		{"null env entry", rawFrame([]byte{0xa1, 0x04, 0xa2, 0x01, 0xf5, 0x06, 0x82, 0x63, 'A', '=', '1', 0xf6}), ErrProtocol},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := readMsg(bytes.NewReader(tt.in))
			if !errors.Is(err, tt.want) || m != nil {
				t.Errorf("msg, err = %v, %v; want nil, %v", m, err, tt.want)
			}
		})
	}
}

// TestHelperThread: a helper (HOTDESK_PAM_HELPER=1, as the Authenticator
// starts it) keeps main on the thread group leader, and HelperMain refuses
// to run on any other thread, where pam_loginuid fails.
func TestHelperThread(t *testing.T) {
	t.Parallel()
	if os.Getenv(helperMarkerEnv) == "1" {
		t.Skip("running as a helper")
	}
	done := make(chan [2]any)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if onMainThread() {
			done <- [2]any{true, 0}
			return
		}
		done <- [2]any{false, HelperMain()}
	}()
	if r := <-done; r[0] == false && r[1] != helperProtocol {
		t.Errorf("HelperMain off the main thread = %v; want %d", r[1], helperProtocol)
	}

	// A helper process (this test binary, whose TestMain calls HelperMain
	// when the marker is set) runs a permit transaction: HelperMain would
	// exit with helperProtocol were main not kept on the main thread.
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "permit"), []byte("auth required pam_permit.so\naccount required pam_permit.so\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 5; i++ {
		hin, toH, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		fromH, hout, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(exe, "pam-helper")
		cmd.Env = append(os.Environ(), helperMarkerEnv+"=1", "GORACE=atexit_sleep_ms=0")
		cmd.ExtraFiles = []*os.File{hin, hout}
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		hin.Close()
		hout.Close()
		if err := writeMsg(toH, &wireMsg{Start: &wireStart{Service: "permit", ConfDir: dir, User: "alice", TTY: "t1"}}); err != nil {
			t.Fatal(err)
		}
		m, rerr := readMsg(fromH)
		toH.Close()
		fromH.Close()
		werr := cmd.Wait()
		if rerr != nil || m.Result == nil || !m.Result.OK || werr != nil {
			t.Fatalf("helper %d: reply %+v, %v; exit %v; stderr:\n%s", i, m, rerr, werr, stderr.String())
		}
	}
}

func TestRunHelperProtocol(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "permit"), []byte("auth required pam_permit.so\naccount required pam_permit.so\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		in       []byte
		wantCode int
		wantOK   bool
	}{
		{"nothing", nil, helperProtocol, false},
		{"answer before start", frame(t, &wireMsg{Answer: &wireAnswer{Text: []byte("x")}}), helperProtocol, false},
		{"permit", frame(t, &wireMsg{Start: &wireStart{Service: "permit", ConfDir: dir, User: "alice", TTY: "t1"}}), helperOK, true},
		{"missing service", frame(t, &wireMsg{Start: &wireStart{Service: "nope", ConfDir: dir, User: "alice"}}), helperOK, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			code := RunHelper(bytes.NewReader(tt.in), &out)
			if code != tt.wantCode {
				t.Fatalf("code = %d; want %d", code, tt.wantCode)
			}
			if out.Len() == 0 {
				return
			}
			m, err := readMsg(&out)
			if err != nil || m.Result == nil {
				t.Fatalf("reply = %+v, %v; want a result", m, err)
			}
			if m.Result.OK != tt.wantOK {
				t.Errorf("result = %+v; want ok = %v", m.Result, tt.wantOK)
			}
		})
	}
}

func TestResultError(t *testing.T) {
	t.Parallel()
	tests := []struct {
		res  wireResult
		want []error
	}{
		{wireResult{Stage: "authenticate", Code: 7}, []error{auth.ErrDenied}},
		{wireResult{Stage: "account", Code: 13}, []error{auth.ErrDenied, ErrAccountExpired}},
		{wireResult{Stage: "chauthtok", Code: 20}, []error{auth.ErrDenied, ErrPasswordChange}},
		{wireResult{Stage: "start", Code: 4}, []error{ErrSystem}},
	}
	for _, tt := range tests {
		err := resultError(&tt.res)
		for _, w := range tt.want {
			if !errors.Is(err, w) {
				t.Errorf("resultError(%+v) = %v; want %v", tt.res, err, w)
			}
		}
	}
}
