package adminapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/hotdesk/hotdesk/cmd/internal/adminapi"
	"github.com/hotdesk/hotdesk/cmd/internal/adminapi/adminapitest"
)

// fuzzRoutes are the admin API's requests that carry input: a JSON body,
// an id or a lockout key in the path.
var fuzzRoutes = []struct{ method, path string }{
	{http.MethodPost, "/v1/tokens/pair"},
	{http.MethodPost, "/v1/tokens"},
	{http.MethodPost, "/v1/tokens/{id}/alias"},
	{http.MethodDelete, "/v1/lockouts/{id}"},
	{http.MethodPost, "/v1/tokens/{id}/disable"},
	{http.MethodDelete, "/v1/sessions/{id}"},
	{http.MethodDelete, "/v1/pairings/{id}"},
}

// FuzzRequests: whatever an admin client sends (a body, an id or key in
// the path), the admin API answers a client error or success with a JSON
// body, never a 500 or a panic, and what reaches the backend passed the
// input checks: ids, users, labels and keys of their bounds and alphabets.
func FuzzRequests(f *testing.F) {
	f.Add(uint8(0), "", []byte(`{"user":"alice","label":"laptop","ttl_seconds":60}`))
	f.Add(uint8(0), "", []byte(`{"user":"  ","ttl_seconds":-1}`))
	f.Add(uint8(0), "", []byte(`{"user":"alice","label":"`+strings.Repeat("x", 200)+`"}`))
	f.Add(uint8(1), "", []byte(`{"id":"soft.abc","user":"alice","label":"a\u0007"}`))
	f.Add(uint8(1), "", []byte(`{"id":"soft.abc","user":"alice"}{}`))
	f.Add(uint8(1), "", []byte(`{"id":"soft.abc","user":"alice","extra":1}`))
	f.Add(uint8(1), "", bytes.Repeat([]byte(" "), adminapi.MaxBodyBytes+1))
	f.Add(uint8(2), "soft.def", []byte(`{"of":"soft.abc"}`))
	f.Add(uint8(3), "source:2001:db8::/64", []byte(nil))
	f.Add(uint8(3), "terminal:desk 5@10.0.0.7", []byte(nil))
	f.Add(uint8(4), "a/b", []byte(nil))
	f.Add(uint8(5), "%zz", []byte(nil))
	f.Add(uint8(6), "ABCD", []byte(nil))
	f.Fuzz(func(t *testing.T, route uint8, id string, body []byte) {
		b := adminapitest.New(adminapitest.State{
			Tokens: []adminapi.TokenInfo{{ID: "soft.abc", User: "alice"}},
		})
		s := adminapi.NewServer(b, nil, 0)
		rt := fuzzRoutes[int(route)%len(fuzzRoutes)]
		target := strings.Replace(rt.path, "{id}", url.PathEscape(id), 1)
		r := httptest.NewRequest(rt.method, "http://hotdesk"+target, bytes.NewReader(body))
		w := httptest.NewRecorder()
		s.ServeForTest(w, r, 1000)
		if w.Code >= 500 {
			t.Fatalf("%s %s %q: %d %s", rt.method, target, body, w.Code, w.Body)
		}
		if !json.Valid(w.Body.Bytes()) {
			t.Fatalf("%s %s: answer %q is not JSON", rt.method, target, w.Body)
		}
		tokens, _ := b.Tokens(context.Background())
		for _, tok := range tokens {
			if err := errors.Join(adminapi.CheckID(tok.ID), adminapi.CheckUser(tok.User), adminapi.CheckLabel(tok.Label)); err != nil {
				t.Fatalf("token %+v reached the backend: %v", tok, err)
			}
		}
		for _, c := range b.PairCalls() {
			if err := errors.Join(adminapi.CheckUser(c.Req.User), adminapi.CheckLabel(c.Req.Label)); err != nil || c.Req.TTLSeconds < 0 {
				t.Fatalf("pairing %+v reached the backend: %v", c.Req, err)
			}
		}
	})
}

// FuzzChecks: the input checks accept only what they promise.
func FuzzChecks(f *testing.F) {
	for _, s := range []string{"soft.abc", "alice", "", "a/b", "a b", "source:2001:db8::/64", "terminal:desk 5@10.0.0.7",
		"ü", "\x00", "a\u200b", strings.Repeat("k", 257), strings.Repeat("é", 100)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		printable := utf8.ValidString(s) && !strings.ContainsFunc(s, func(r rune) bool { return r < ' ' || r == 0x7f })
		if adminapi.CheckID(s) == nil && (s == "" || len(s) > adminapi.MaxIDLen || strings.ContainsAny(s, "/\\ ") || !isGraphicASCII(s)) {
			t.Fatalf("id %q accepted", s)
		}
		if adminapi.CheckUser(s) == nil && (s == "" || len(s) > adminapi.MaxIDLen || strings.ContainsAny(s, ":/ ") || !isGraphicASCII(s)) {
			t.Fatalf("user %q accepted", s)
		}
		if adminapi.CheckLabel(s) == nil && (len(s) > adminapi.MaxLabelLen || !printable) {
			t.Fatalf("label %q accepted", s)
		}
		if err := adminapi.CheckLockoutKey(s); err == nil && (s == "" || len(s) > adminapi.MaxLockoutKeyLen || !printable) {
			t.Fatalf("lockout key %q accepted", s)
		} else if err != nil && !errors.Is(err, adminapi.ErrInvalid) {
			t.Fatalf("error %v is not ErrInvalid", err)
		}
	})
}

func isGraphicASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] >= 0x7f {
			return false
		}
	}
	return true
}
