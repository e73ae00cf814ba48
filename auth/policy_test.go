package auth_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/hotdesk/hotdesk/auth"
	"github.com/hotdesk/hotdesk/proto"
)

// TestLivePolicies: a Set applies to the next request resolved, an
// invalid one is refused and changes nothing, and requests resolved while
// Sets happen get one Policies' answer or the other's (run under -race).
func TestLivePolicies(t *testing.T) {
	card := &auth.Policies{Default: auth.Policy{Kind: auth.KindCard}}
	strict := &auth.Policies{Default: auth.Policy{Kind: auth.KindCardPassword},
		Users: map[string]auth.Policy{"carl": {Kind: auth.KindCard}}}
	if _, err := auth.NewLivePolicies(&auth.Policies{}); !errors.Is(err, auth.ErrUnknownKind) {
		t.Fatalf("NewLivePolicies(no default) err = %v; want %v", err, auth.ErrUnknownKind)
	}
	l, err := auth.NewLivePolicies(card)
	if err != nil {
		t.Fatal(err)
	}
	kinds := func() (alice, carl auth.Kind) {
		return l.For("uid.1", "alice", nil).Kind, l.For("uid.2", "carl", nil).Kind
	}
	if a, c := kinds(); a != auth.KindCard || c != auth.KindCard {
		t.Fatalf("before the Set: alice %s, carl %s; want card, card", a, c)
	}
	if err := l.Set(strict); err != nil {
		t.Fatal(err)
	}
	if a, c := kinds(); a != auth.KindCardPassword || c != auth.KindCard {
		t.Fatalf("after the Set: alice %s, carl %s; want card+password, card", a, c)
	}
	if err := l.Set(&auth.Policies{Default: auth.Policy{Kind: "smoke-signals"}}); !errors.Is(err, auth.ErrUnknownKind) {
		t.Fatalf("Set(invalid) err = %v; want %v", err, auth.ErrUnknownKind)
	}
	if a, _ := kinds(); a != auth.KindCardPassword {
		t.Fatalf("after an invalid Set: alice %s; want card+password (kept)", a)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range 1000 {
			l.Set([]*auth.Policies{card, strict}[i%2])
		}
	}()
	for range 1000 {
		if a := l.For("uid.1", "alice", nil).Kind; a != auth.KindCard && a != auth.KindCardPassword {
			t.Fatalf("during Sets: alice %s; want card or card+password", a)
		}
	}
	<-done
}

func TestPoliciesFor(t *testing.T) {
	p := &auth.Policies{
		Default: auth.Policy{Kind: auth.KindCardPassword},
		Tokens:  map[string]auth.Policy{"uid.kiosk": {Kind: auth.KindKiosk}},
		Users:   map[string]auth.Policy{"alice": {Kind: auth.KindCardPIN}},
		Groups: []auth.GroupPolicy{
			{Group: "staff", Policy: auth.Policy{Kind: auth.KindCard}},
			{Group: "guests", Policy: auth.Policy{Kind: auth.KindPassword}},
		},
	}
	tests := []struct {
		token, user string
		groups      []string
		want        auth.Kind
	}{
		{"uid.kiosk", "alice", []string{"staff"}, auth.KindKiosk},
		{"uid.1", "alice", []string{"staff"}, auth.KindCardPIN},
		{"uid.1", "ALICE", []string{"staff"}, auth.KindCardPIN},
		{"uid.1", "Alice", nil, auth.KindCardPIN},
		{"uid.1", "bob", []string{"guests", "staff"}, auth.KindCard},
		{"uid.1", "bob", []string{"guests"}, auth.KindPassword},
		{"uid.1", "bob", nil, auth.KindCardPassword},
		{"", "", nil, auth.KindCardPassword},
	}
	for _, tt := range tests {
		if got := p.For(tt.token, tt.user, tt.groups).Kind; got != tt.want {
			t.Errorf("For(%q, %q, %q) = %v; want %v", tt.token, tt.user, tt.groups, got, tt.want)
		}
	}
	if err := p.Validate(); err != nil {
		t.Errorf("validate: %v", err)
	}
	bad := &auth.Policies{Default: auth.Policy{Kind: auth.KindCard}, Users: map[string]auth.Policy{"x": {Kind: "smoke-signals"}}}
	if err := bad.Validate(); !errors.Is(err, auth.ErrUnknownKind) {
		t.Errorf("validate bad: err = %v; want %v", err, auth.ErrUnknownKind)
	}
	twice := &auth.Policies{Default: auth.Policy{Kind: auth.KindCard},
		Users: map[string]auth.Policy{"bob": {Kind: auth.KindCard}, "Bob": {Kind: auth.KindPassword}}}
	if err := twice.Validate(); err == nil || !strings.Contains(err.Error(), "Bob and bob differ only in case") {
		t.Errorf("validate bob and Bob: err = %v; want differ only in case", err)
	}
	// "ſ" is "s" to For (strings.EqualFold), though not to strings.ToLower:
	// with both, which one SAM gets would be up to map order.
	longS := &auth.Policies{Default: auth.Policy{Kind: auth.KindCard},
		Users: map[string]auth.Policy{"sam": {Kind: auth.KindCard}, "ſam": {Kind: auth.KindPassword}}}
	if err := longS.Validate(); err == nil || !strings.Contains(err.Error(), "differ only in case") {
		t.Errorf("validate sam and ſam: err = %v; want differ only in case", err)
	}
}

func TestPolicyDefaults(t *testing.T) {
	tests := []struct {
		p         auth.Policy
		service   string
		reauth    bool
		needsCard bool
	}{
		{auth.Policy{Kind: auth.KindKiosk}, "", false, true},
		{auth.Policy{Kind: auth.KindCard}, "", false, true},
		{auth.Policy{Kind: auth.KindCardPIN}, auth.DefaultPINService, true, true},
		{auth.Policy{Kind: auth.KindCardPassword, NoReauth: true}, auth.DefaultService, false, true},
		{auth.Policy{Kind: auth.KindPassword, Service: "corp"}, "corp", true, false},
		// A typed user name proves nothing: a password login asks for the
		// password on every hot-desk, whatever NoReauth says.
		{auth.Policy{Kind: auth.KindPassword, NoReauth: true}, auth.DefaultService, true, false},
	}
	for _, tt := range tests {
		if got := tt.p.ServiceName(); got != tt.service {
			t.Errorf("%v service = %q; want %q", tt.p.Kind, got, tt.service)
		}
		if got := tt.p.ReauthRequired(); got != tt.reauth {
			t.Errorf("%v reauth = %v; want %v", tt.p.Kind, got, tt.reauth)
		}
		if got := tt.p.NeedsCard(); got != tt.needsCard {
			t.Errorf("%v needs card = %v; want %v", tt.p.Kind, got, tt.needsCard)
		}
	}
}

type fakeServices struct{ service string }

func (f *fakeServices) AuthenticateService(ctx context.Context, service string, req auth.Request, conv auth.Conversation) (auth.Result, error) {
	f.service = service
	return auth.Result{User: req.User}, nil
}

// fakeAccounts is an account stack refusing the users of refuse; it
// records the service of the last check ("account:" and the name).
type fakeAccounts struct {
	fakeServices
	refuse map[string]bool
	checks int
}

func (f *fakeAccounts) CheckAccount(_ context.Context, service string, req auth.Request) error {
	f.service = "account:" + service
	f.checks++
	if f.refuse[req.User] {
		return fmt.Errorf("fake: %w: %w", auth.ErrDenied, auth.ErrAccount)
	}
	return nil
}

func TestChooser(t *testing.T) {
	p := &auth.Policies{
		Default: auth.Policy{Kind: auth.KindCardPassword},
		Tokens: map[string]auth.Policy{
			"uid.kiosk": {Kind: auth.KindKiosk, KioskUser: "guest"},
			"uid.card":  {Kind: auth.KindCard},
			"uid.kt":    {Kind: auth.KindKiosk},
			"uid.pin":   {Kind: auth.KindCardPIN, NoReauth: true},
			"uid.cards": {Kind: auth.KindCard, Service: "cards"},
			"uid.pw":    {Kind: auth.KindCardPassword, NoReauth: true},
		},
	}
	tests := []struct {
		name        string
		req         auth.Request
		wantUser    string
		wantService string
		wantErr     error
	}{
		{"kiosk", auth.Request{Token: "uid.kiosk", User: "alice"}, "guest", "", nil},
		{"kiosk as the token's user", auth.Request{Token: "uid.kt", User: "alice"}, "alice", "", nil},
		{"kiosk unregistered token", auth.Request{Token: "uid.kt"}, "kiosk", "", nil},
		{"card registered", auth.Request{Token: "uid.card", User: "alice"}, "alice", "account:" + auth.DefaultService, nil},
		{"card own service", auth.Request{Token: "uid.cards", User: "alice"}, "alice", "account:cards", nil},
		{"card account refused", auth.Request{Token: "uid.card", User: "mallory"}, "", "account:" + auth.DefaultService, auth.ErrAccount},
		{"card resume account refused", auth.Request{Token: "uid.card", User: "mallory", Existing: true}, "", "account:" + auth.DefaultService, auth.ErrAccount},
		{"card unregistered", auth.Request{Token: "uid.card"}, "", "", auth.ErrDenied},
		{"pin new session", auth.Request{Token: "uid.pin", User: "alice"}, "alice", auth.DefaultPINService, nil},
		{"pin hot-desk without reauth", auth.Request{Token: "uid.pin", User: "alice", Existing: true}, "alice", "account:" + auth.DefaultPINService, nil},
		{"pin hot-desk account refused", auth.Request{Token: "uid.pin", User: "mallory", Existing: true}, "", "account:" + auth.DefaultPINService, auth.ErrAccount},
		{"password card hot-desk account refused", auth.Request{Token: "uid.pw", User: "mallory", Existing: true}, "", "account:" + auth.DefaultService, auth.ErrDenied},
		{"pin locked session asks", auth.Request{Token: "uid.pin", User: "mallory", Existing: true, Locked: true}, "mallory", auth.DefaultPINService, nil},
		{"password hot-desk reauth", auth.Request{Token: "uid.x", User: "bob", Existing: true}, "bob", auth.DefaultService, nil},
		{"kiosk not checked", auth.Request{Token: "uid.kt", User: "mallory"}, "mallory", "", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			svc := &fakeAccounts{refuse: map[string]bool{"mallory": true}}
			c := &auth.Chooser{Policies: p, Services: svc}
			res, err := c.Authenticate(t.Context(), tt.req, nil)
			if !errors.Is(err, tt.wantErr) || (tt.wantErr == nil && err != nil) {
				t.Fatalf("err = %v; want %v", err, tt.wantErr)
			}
			if res.User != tt.wantUser {
				t.Errorf("user = %q; want %q", res.User, tt.wantUser)
			}
			if svc.service != tt.wantService {
				t.Errorf("service = %q; want %q", svc.service, tt.wantService)
			}
		})
	}
}

// TestChooserNoAccountCheck: without a way to check accounts, the logins
// that ask no secret are refused, not granted.
func TestChooserNoAccountCheck(t *testing.T) {
	p := &auth.Policies{Default: auth.Policy{Kind: auth.KindCard}, Tokens: map[string]auth.Policy{
		"uid.pin": {Kind: auth.KindCardPIN, NoReauth: true},
	}}
	for _, req := range []auth.Request{
		{Token: "uid.card", User: "alice"},
		{Token: "uid.card", User: "alice", Existing: true},
		{Token: "uid.pin", User: "alice", Existing: true},
	} {
		c := &auth.Chooser{Policies: p, Services: &fakeServices{}}
		if res, err := c.Authenticate(t.Context(), req, nil); !errors.Is(err, auth.ErrNoAccountCheck) {
			t.Errorf("%+v: user, err = %q, %v; want %v", req, res.User, err, auth.ErrNoAccountCheck)
		}
		// Accounts, when set, is used instead of Services.
		acc := &fakeAccounts{}
		c = &auth.Chooser{Policies: p, Services: &fakeServices{}, Accounts: acc}
		if res, err := c.Authenticate(t.Context(), req, nil); err != nil || res.User != "alice" || acc.checks != 1 {
			t.Errorf("%+v with Accounts: user, err, checks = %q, %v, %d; want alice, nil, 1", req, res.User, err, acc.checks)
		}
	}
}

// promptingServices is a PAM stack that asks what a module asks.
type promptingServices struct {
	style proto.PromptStyle
	text  string
}

func (f *promptingServices) AuthenticateService(ctx context.Context, _ string, req auth.Request, conv auth.Conversation) (auth.Result, error) {
	if _, err := conv.Prompt(ctx, f.style, f.text); err != nil {
		return auth.Result{}, err
	}
	return auth.Result{User: req.User}, nil
}

// recordConv records the prompts shown at the terminal.
type recordConv struct{ shown []string }

func (r *recordConv) Prompt(_ context.Context, _ proto.PromptStyle, text string) (string, error) {
	r.shown = append(r.shown, text)
	return "2468", nil
}

// TestChooserPINPrompt: with card+pin, PAM's generic password prompt (what
// pam_userdb, the shipped PIN stack, and most modules ask) is shown as
// "PIN: ": a person asked for a PIN after the card is not asked for a
// password. Other prompts, and other policies' prompts, pass unchanged.
func TestChooserPINPrompt(t *testing.T) {
	p := &auth.Policies{
		Default: auth.Policy{Kind: auth.KindCardPIN},
		Tokens:  map[string]auth.Policy{"uid.pw": {Kind: auth.KindCardPassword}},
	}
	tests := []struct {
		token string
		style proto.PromptStyle
		text  string
		want  string
	}{
		{"uid.pin", proto.PromptEchoOff, "Password: ", "PIN: "},
		{"uid.pin", proto.PromptEchoOff, "Password:", "PIN: "},
		{"uid.pin", proto.PromptEchoOff, "Card PIN: ", "Card PIN: "},
		{"uid.pin", proto.PromptEchoOn, "Password: ", "Password: "},
		{"uid.pin", proto.PromptError, "Password: ", "Password: "},
		{"uid.pw", proto.PromptEchoOff, "Password: ", "Password: "},
	}
	for _, tt := range tests {
		c := &auth.Chooser{Policies: p, Services: &promptingServices{style: tt.style, text: tt.text}}
		conv := &recordConv{}
		if _, err := c.Authenticate(t.Context(), auth.Request{Token: tt.token, User: "alice"}, conv); err != nil {
			t.Fatal(err)
		}
		if len(conv.shown) != 1 || conv.shown[0] != tt.want {
			t.Errorf("%s: %s %q shown as %q; want %q", tt.token, tt.style, tt.text, conv.shown, tt.want)
		}
	}
}

// fakeOpener opens sessions for user (as PAM_USER; "" = the request's),
// recording the service and the requests.
type fakeOpener struct {
	user    string
	service string
	opened  int
	closed  int
}

func (f *fakeOpener) OpenSessionWithoutSecret(_ context.Context, service string, req auth.Request) (auth.Result, error) {
	f.service = service
	f.opened++
	if req.User == "mallory" {
		return auth.Result{}, fmt.Errorf("fake: %w: %w", auth.ErrDenied, auth.ErrAccount)
	}
	user := f.user
	if user == "" {
		user = req.User
	}
	return auth.Result{User: user, Env: []string{"A=b"}, Session: closeFunc(func() { f.closed++ })}, nil
}

type closeFunc func()

func (f closeFunc) Close(context.Context) error { f(); return nil }

// TestChooserCardSession: with Sessions, a card login that starts a new
// desktop gets its session (and NoSecret) from Sessions, with the
// policy's account service; a resume, and the other kinds' hot-desks,
// have their account checked only; a session opened for another user
// than the token's is closed and the login refused.
func TestChooserCardSession(t *testing.T) {
	p := &auth.Policies{Default: auth.Policy{Kind: auth.KindCard}, Tokens: map[string]auth.Policy{
		"uid.cards": {Kind: auth.KindCard, Service: "cards"},
		"uid.pin":   {Kind: auth.KindCardPIN, NoReauth: true},
	}}
	for _, tt := range []struct {
		name             string
		req              auth.Request
		opened, checks   int
		service, wantErr string
	}{
		{"new", auth.Request{Token: "uid.card", User: "alice"}, 1, 0, auth.DefaultService, ""},
		{"new own service", auth.Request{Token: "uid.cards", User: "alice"}, 1, 0, "cards", ""},
		{"new refused", auth.Request{Token: "uid.card", User: "mallory"}, 1, 0, auth.DefaultService, "account"},
		{"resume", auth.Request{Token: "uid.card", User: "alice", Existing: true}, 0, 1, "", ""},
		{"pin hot-desk", auth.Request{Token: "uid.pin", User: "alice", Existing: true}, 0, 1, "", ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			so, acc := &fakeOpener{}, &fakeAccounts{}
			c := &auth.Chooser{Policies: p, Services: &fakeServices{}, Accounts: acc, Sessions: so}
			res, err := c.Authenticate(t.Context(), tt.req, nil)
			if so.opened != tt.opened || acc.checks != tt.checks || so.service != tt.service {
				t.Errorf("sessions opened, account checks, service = %d, %d, %q; want %d, %d, %q", so.opened, acc.checks, so.service, tt.opened, tt.checks, tt.service)
			}
			switch {
			case tt.wantErr != "":
				if !errors.Is(err, auth.ErrAccount) || res.Session != nil {
					t.Errorf("session, err = %v, %v; want none, %v", res.Session, err, auth.ErrAccount)
				}
			case err != nil || res.User != "alice" || !res.NoSecret:
				t.Errorf("user, NoSecret, err = %q, %v, %v; want alice, true, nil", res.User, res.NoSecret, err)
			case (res.Session != nil) != (tt.opened == 1):
				t.Errorf("session = %v; want one iff opened", res.Session)
			}
		})
	}
	// PAM_USER rewritten by a module: that session is not the token's user's.
	so := &fakeOpener{user: "bob"}
	c := &auth.Chooser{Policies: p, Services: &fakeServices{}, Accounts: &fakeAccounts{}, Sessions: so}
	if res, err := c.Authenticate(t.Context(), auth.Request{Token: "uid.card", User: "alice"}, nil); err == nil || res.Session != nil || so.closed != 1 {
		t.Errorf("session for another user: session, err, closed = %v, %v, %d; want none, an error, 1", res.Session, err, so.closed)
	}
}
