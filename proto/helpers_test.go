package proto_test

import (
	"bytes"
	"encoding/hex"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/hotdesk/hotdesk/proto"
)

// samples returns one fully populated body (every field non-zero) of every
// message type, keyed by type.
func samples() map[proto.Type]any {
	b := func(n int, v byte) []byte { return bytes.Repeat([]byte{v}, n) }
	return map[proto.Type]any{
		proto.TypeHello:         &proto.Hello{Versions: []uint16{1, 2, 65535}, TerminalID: "term-1", Name: "Desk 4, 2nd floor ☕", Hops: 2, Fence: 1 << 40, Token: "soft.abc"},
		proto.TypeWelcome:       &proto.Welcome{Version: 1, ServerID: "b1", Nonce: b(32, 7), PingInterval: 15000, Members: []proto.Member{{ServerID: "b1", Addr: "10.0.0.1:4500", Fingerprint: b(32, 9), Draining: true}}},
		proto.TypeTokenInserted: &proto.TokenInserted{Token: "uid.04a1b2c3", Reader: "Virtual PCD 00 00", Resume: b(proto.ResumeKeyLen, 9)},
		proto.TypeTokenRemoved:  &proto.TokenRemoved{Token: "uid.04a1b2c3", Reader: "Virtual PCD 00 01"},
		proto.TypeChallenge:     &proto.Challenge{ID: 4294967295, Token: "soft.xyz", Nonce: b(32, 1), ServerID: "b2"},
		proto.TypeProof:         &proto.Proof{ID: 9, Token: "soft.xyz", Signature: b(64, 0xee)},
		proto.TypeAuthPrompt:    &proto.AuthPrompt{ID: 3, Style: proto.PromptEchoOff, Text: "Password: ", Token: "uid.04a1b2c3"},
		proto.TypeAuthAnswer:    &proto.AuthAnswer{ID: 3, Text: "hunter2"},
		proto.TypeAttached:      &proto.Attached{SessionID: "s-1", Token: "piv.0011", User: "alice", Endpoint: "rdp://127.0.0.1:3389", Ticket: b(16, 5), Resumed: true, ServerID: "b1", ResumeKey: b(proto.ResumeKeyLen, 9)},
		proto.TypeDetached:      &proto.Detached{SessionID: "s-1", Reason: proto.DetachTakeover, Message: "taken over", Terminal: "term-2"},
		proto.TypeRedirect:      &proto.Redirect{Token: "hce.f00", ServerID: "b3", Addr: "10.0.0.3:4433", Fingerprint: b(32, 0xab), Fence: 77},
		proto.TypeError:         &proto.Error{Code: proto.ErrSessionLimited, Message: "too many", Token: "uid.01", Detail: proto.DetailLockedOut, RetryAfterMs: 27000},
		proto.TypePing:          &proto.Ping{Seq: 1<<64 - 1},
		proto.TypePong:          &proto.Pong{Seq: 42},
		proto.TypePair:          &proto.Pair{Code: "123-456", Kind: "soft", PublicKey: b(32, 9), Label: "phone", Signature: b(64, 0x5e)},
		proto.TypePaired:        &proto.Paired{Token: "soft.abc", User: "bob"},
		proto.TypeCardError:     &proto.CardError{Reader: "r0", Message: "no ATR"},
		proto.TypeCancel:        &proto.Cancel{ID: 12},
		proto.TypeAttach:        &proto.Attach{Ticket: b(32, 7), TerminalID: "term-1"},
		proto.TypeAttachOK:      &proto.AttachOK{SessionID: "s-1"},
	}
}

// unhex decodes hex with optional spaces.
func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// msgEqual compares messages treating nil and empty slices alike.
func msgEqual(a, b proto.Msg) bool { return cmp.Equal(a, b, cmpopts.EquateEmpty()) }

func msgDiff(a, b proto.Msg) string { return cmp.Diff(a, b, cmpopts.EquateEmpty()) }
