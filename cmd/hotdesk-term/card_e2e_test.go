package main

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hotdesk/hotdesk/internal/testutil"
	"github.com/hotdesk/hotdesk/proto"
	"github.com/hotdesk/hotdesk/tokens/nfc"
	"github.com/hotdesk/hotdesk/tokens/pcsc/pcscdtest"
	"github.com/hotdesk/hotdesk/tokens/pcsc/vcard"
)

// insertCard inserts c into reader i of d (vpcd's port), or fails t.
func insertCard(ctx context.Context, t *testing.T, d *pcscdtest.Daemon, i int, c vcard.Card) *vcard.Inserted {
	t.Helper()
	in, err := vcard.Insert(ctx, d.Port(i), c)
	if err != nil {
		t.Fatal(err)
	}
	return in
}

// cardWorld is a real hotdeskd and a private pcscd with the two vpcd
// readers: terminal agents run with -pcsc, each on one reader, as thin
// clients with a card reader do.
type cardWorld struct {
	*testutil.Daemon
	dir   string
	addr  string
	pcscd *pcscdtest.Daemon
}

func newCardWorld(t *testing.T, extraConfig ...string) *cardWorld {
	t.Helper()
	d := startPCSCD(t)
	testutil.NeedTools(t, "weston")
	w := &cardWorld{dir: t.TempDir(), addr: testutil.FreeAddr(t), pcscd: d}
	socket := testutil.AdminSocket(w.dir)
	cfg := testutil.DaemonConfig(t, "cards", w.dir, w.addr, "") + fmt.Sprintf(`
session {
  auth = "card"
  keep_on_stop = false
}
auth {
  # carol (a phone) is no account of this host: admit every account.
  pam_dir = %q
}
%s
`, testutil.PermitAccountsDir(t, w.dir), strings.Join(extraConfig, "\n"))
	t.Cleanup(func() { // after the daemon's own cleanup
		if t.Failed() {
			t.Logf("pcscd log:\n%s", d.Log())
		}
	})
	w.Daemon = testutil.NewDaemon(t, buildBinaries(t), w.dir, socket, cfg)
	w.Wrap = []string{"env", pcscEnv(d)} // its seats read this test's readers
	w.Start()
	return w
}

// pcscStart serializes pcscdtest.Start within this test process: a daemon
// listens on its two vpcd ports before the next one picks two free ports,
// so parallel tests never share a reader.
var pcscStart sync.Mutex

// startPCSCD starts a private pcscd with two vpcd readers of the test's
// own, stopped when the test ends. Its clients are child processes that
// get its socket through pcscEnv: pcscdtest.Start also points this
// process's environment at the newest daemon, which a test running in
// parallel must not rely on.
func startPCSCD(t *testing.T) *pcscdtest.Daemon {
	t.Helper()
	pcscStart.Lock()
	d, err := pcscdtest.Start()
	pcscStart.Unlock()
	pcscdtest.Require(t, err)
	t.Cleanup(func() { d.Close() })
	return d
}

// pcscEnv is the environment variable that points a PC/SC client process
// (hotdesk-term -pcsc, hotdeskd with seats) at the private pcscd d.
func pcscEnv(d *pcscdtest.Daemon) string { return pcscdtest.SocketEnv + "=" + d.Socket() }

func (w *cardWorld) ctlOut(args ...string) ([]byte, error) { return w.Ctl(args...) }

// agent runs hotdesk-term with extra args and returns its JSON events. It
// is stopped when t (the test or a subtest of it) ends.
func (w *cardWorld) agent(ctx context.Context, t *testing.T, args ...string) (*exec.Cmd, <-chan map[string]any, io.WriteCloser) {
	t.Helper()
	base := []string{"-server", w.addr, "-pin", w.Pin, "-json", "-keystore", filepath.Join(w.dir, "none.json")}
	cmd := exec.CommandContext(ctx, filepath.Join(w.Bin, "hotdesk-term"), append(base, args...)...)
	cmd.Env = append(os.Environ(), pcscEnv(w.pcscd))
	cmd.Stderr = os.Stderr
	evs, stdin := testutil.StartEvents(t, cmd, 64)
	return cmd, evs, stdin
}

// settleTime is how long pcscd takes to notice that a card left a vpcd
// reader: its next poll of the reader (about every 0.4 s), with room to
// spare. vpcd cannot show a card swapped within one poll.
const settleTime = time.Second

// settle waits for pcscd's next poll of the vpcd readers: no agent can
// show that pcscd saw a removal when the card was never identified (a
// garbage card) or nobody watches the reader (after pairing), and a quiet
// spell shows that nothing comes after a refusal.
func settle() { time.Sleep(settleTime) }

// settledSince waits until settleTime has passed since removed, the time a
// card left a reader: the wait of settle, overlapped with whatever the
// test did meanwhile.
func settledSince(removed time.Time) { time.Sleep(time.Until(removed.Add(settleTime))) }

// awaitEvent returns the first event of evs that match accepts (match
// may fail the test on an event that must not come), within 30 s
// (testutil.AwaitEvent); what names the awaited event.
func awaitEvent(t *testing.T, evs <-chan map[string]any, what string, match func(ev map[string]any) bool) map[string]any {
	t.Helper()
	return testutil.AwaitEvent(t, evs, what, 30*time.Second, match)
}

// waitEvent is the agent's next event want (testutil.NextEvent), within 30 s.
func waitEvent(t *testing.T, evs <-chan map[string]any, want string) map[string]any {
	t.Helper()
	return testutil.NextEvent(t, evs, want, 30*time.Second)
}

// TestCardsE2E: a UID card and an NFC phone at thin-client terminals, through
// real pcscd, the real agent and the real daemon: a session follows the card
// from one reader's terminal to the other's; a phone enrolled by pairing
// code (signing the pairing transcript) logs in by signing the challenge;
// an impostor phone cannot pair another phone's key; an unenrolled phone and an impostor
// (carol's token id, another key) are refused; a garbage card is a card
// error and no session; a card back within the removal grace does not
// suspend the session.
//
// Budget: about 10 s after the daemon is ready. Once the card has moved,
// the two readers are independent: the phones and the garbage card at
// desk 0 run beside the debounce at reader 1 (subtests run concurrently,
// each with an agent of its own). A removal followed by a "detached" event
// needs no pause: the agent saw it through pcscd.
func TestCardsE2E(t *testing.T) {
	t.Parallel()
	// The account first: its useradd runs while another test builds the
	// binaries, and it is removed after the daemon has stopped.
	alice := newLocalUser(t, "alice") // hotdeskd registers tokens to local users only
	w := newCardWorld(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	reader0, reader1 := pcscdtest.Readers[0][len(pcscdtest.Readers[0])-5:], pcscdtest.Readers[1][len(pcscdtest.Readers[1])-5:]

	// Pair a phone: the agent reads its key over NFC.
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	phone := &nfc.Phone{Key: key}
	out, err := w.ctlOut("token", "pair", "-user", "carol", "-json")
	if err != nil {
		t.Fatal(err)
	}
	var pr struct{ Code string }
	json.Unmarshal(out, &pr)
	pairCmd, pairEvs, _ := w.agent(ctx, t, "-id", "desk-0", "-pcsc", "-readers", reader0, "pair", pr.Code)
	waitEvent(t, pairEvs, "waiting")
	ins := insertCard(ctx, t, w.pcscd, 0, vcard.PhoneCard(phone))
	paired := waitEvent(t, pairEvs, "paired")
	if paired["token"] != phone.TokenID() {
		t.Fatalf("paired %v; want %s", paired["token"], phone.TokenID())
	}
	pairCmd.Wait()
	ins.Remove()
	phoneOut := time.Now()

	// An impostor phone pairing another phone's key (read from it, or
	// anywhere) with a code: it cannot sign for that key, and the broker
	// refuses the pairing (proof_refused) instead of enrolling the key to
	// the code's user, whose session the other phone would then open.
	_, victimKey, _ := ed25519.GenerateKey(rand.Reader)
	_, forger, _ := ed25519.GenerateKey(rand.Reader)
	if out, err = w.ctlOut("token", "pair", "-user", "carol", "-json"); err != nil {
		t.Fatal(err)
	}
	json.Unmarshal(out, &pr)
	pairCmd, pairEvs, _ = w.agent(ctx, t, "-id", "desk-0", "-pcsc", "-readers", reader0, "pair", pr.Code)
	waitEvent(t, pairEvs, "waiting")
	settledSince(phoneOut) // pcscd saw the genuine phone leave
	ins = insertCard(ctx, t, w.pcscd, 0, vcard.ImpostorCard(&nfc.Phone{Key: victimKey}, forger))
	if ev := waitEvent(t, pairEvs, "error"); ev["name"] != "pairing" || ev["detail"] != proto.DetailProofRefused {
		t.Fatalf("impostor phone paired: %v; want Error{pairing, proof_refused}", ev)
	}
	pairCmd.Wait()
	ins.Remove()
	if out, err := w.ctlOut("token", "list", "-json"); err != nil || strings.Contains(string(out), (&nfc.Phone{Key: victimKey}).TokenID()) {
		t.Fatalf("token list after the impostor's pairing: %v %s; want no %s", err, out, (&nfc.Phone{Key: victimKey}).TokenID())
	}
	phoneOut = time.Now()

	if out, err := w.ctlOut("token", "register", "uid.04a1b2c3", "-user", alice); err != nil {
		t.Fatalf("register: %v %s", err, out)
	}
	cmd1, ev1, _ := w.agent(ctx, t, "-id", "desk-1", "-pcsc", "-readers", reader1, "-remove-grace", "200ms", "run")
	// pcscd sees the phone leave reader 0 before desk 0's agent looks at
	// it and the next card goes in (nobody watches the reader now).
	settledSince(phoneOut)
	_, ev0, _ := w.agent(ctx, t, "-id", "desk-0", "-pcsc", "-readers", reader0, "-remove-grace", "200ms", "run")
	waitEvent(t, ev0, "connected")
	waitEvent(t, ev1, "connected")

	// The UID card at desk 0, then at desk 1: the same session. The
	// terminal says it reads the card before the card is identified.
	uid := []byte{0x04, 0xa1, 0xb2, 0xc3}
	card := insertCard(ctx, t, w.pcscd, 0, vcard.UIDCard(uid))
	readThenInserted(t, ev0, "uid.04a1b2c3")
	att := waitEvent(t, ev0, "attached")
	if att["user"] != alice || att["token"] != "uid.04a1b2c3" {
		t.Fatalf("card at desk 0: %v; want %s's session", att, alice)
	}
	card.Remove()
	if det := waitEvent(t, ev0, "detached"); det["reason"] != "token_removed" {
		t.Fatalf("card pulled: %v; want token_removed", det)
	}
	card = insertCard(ctx, t, w.pcscd, 1, vcard.UIDCard(uid))
	att1 := waitEvent(t, ev1, "attached")
	if att1["session"] != att["session"] || att1["resumed"] != true {
		t.Fatalf("card at desk 1: %v; want session %v resumed", att1, att["session"])
	}
	card.Remove()
	waitEvent(t, ev1, "detached")

	// From here the readers are independent: desk 0 (reader 0) and the
	// debounce at reader 1 run side by side. t.Run may be called from
	// several goroutines; these subtests are not parallel tests (they wait
	// for no slot of -test.parallel) and each fails on its own.
	var wg sync.WaitGroup
	wg.Go(func() {
		t.Run("desk0", func(t *testing.T) {
			// The phone at desk 0 proves its key and gets carol's session.
			ins := insertCard(ctx, t, w.pcscd, 0, vcard.PhoneCard(phone))
			waitEvent(t, ev0, "challenge")
			if a := waitEvent(t, ev0, "attached"); a["user"] != "carol" || a["token"] != phone.TokenID() {
				t.Fatalf("phone: %v; want carol's session", a)
			}
			ins.Remove()
			waitEvent(t, ev0, "detached")

			// A phone that was never enrolled, and an impostor that claims
			// carol's phone but signs with its own key: refused, no session.
			_, stranger, _ := ed25519.GenerateKey(rand.Reader)
			_, forger, _ := ed25519.GenerateKey(rand.Reader)
			for _, c := range []struct {
				name      string
				card      vcard.Card
				wantError string
			}{
				{"unenrolled phone", vcard.PhoneCard(&nfc.Phone{Key: stranger}), "unknown_token"},
				{"impostor phone", vcard.ImpostorCard(phone, forger), "auth_failed"},
			} {
				ins := insertCard(ctx, t, w.pcscd, 0, c.card)
				if ev := waitRefused(t, ev0); ev["name"] != c.wantError {
					t.Errorf("%s: got %v; want error %s", c.name, ev, c.wantError)
				}
				ins.Remove()
				settle()              // a quiet spell: no session after the refusal
				quiet(t, ev0, c.name) // the removal and any answer to it
			}

			// A card that answers nothing sensible: a card error, no session.
			bad := insertCard(ctx, t, w.pcscd, 0, vcard.GarbageCard())
			awaitEvent(t, ev0, "card error", func(ev map[string]any) bool {
				if ev["event"] == "attached" || ev["kind"] == "inserted" {
					t.Fatalf("garbage card: %v; want no session", ev)
				}
				return ev["event"] == "card" && ev["kind"] == "error"
			})
			bad.Remove()
			settle() // a quiet spell: no session after the error
			quiet(t, ev0, "garbage card")

			// A mute card (it never answers: identification would time
			// out after 5 s) is reported as being read at once; pulled
			// before its identification ends, that reading ends with a
			// removal without a token, and no card error, no session.
			mute := insertCard(ctx, t, w.pcscd, 0, vcard.MuteCard())
			awaitEvent(t, ev0, "card_reading of the mute card", func(ev map[string]any) bool {
				if ev["event"] == "card" || ev["event"] == "attached" {
					t.Fatalf("mute card: %v before card_reading", ev)
				}
				return ev["event"] == "card_reading" && strings.HasSuffix(fmt.Sprint(ev["reader"]), reader0)
			})
			select { // its identification has started: the card hangs it
			case <-mute.Seen():
			case <-ctx.Done():
				t.Fatal("the agent never talked to the mute card")
			}
			mute.Remove()
			awaitEvent(t, ev0, "the mute card's removal", func(ev map[string]any) bool {
				if ev["event"] == "attached" || ev["event"] == "card" && ev["kind"] != "removed" {
					t.Fatalf("mute card pulled: %v; want its removal without a token", ev)
				}
				if ev["event"] == "card" && ev["token"] != "" {
					t.Fatalf("mute card pulled: %v; want no token", ev)
				}
				return ev["event"] == "card"
			})
			settle()
			quiet(t, ev0, "mute card")
		})
	})
	wg.Go(func() {
		t.Run("debounce", func(t *testing.T) {
			// Debounce: with a grace of 4 s, a card out of the field and
			// back within the grace does not suspend the session; pulled
			// for good, it does, and nothing happened in between.
			cmd1.Process.Kill()
			_, ev2, _ := w.agent(ctx, t, "-id", "desk-2", "-pcsc", "-readers", reader1, "-remove-grace", "4s", "run")
			waitEvent(t, ev2, "connected")
			card := insertCard(ctx, t, w.pcscd, 1, vcard.UIDCard(uid))
			if a := waitEvent(t, ev2, "attached"); a["session"] != att["session"] {
				t.Fatalf("card at desk 2: %v; want session %v", a, att["session"])
			}
			card.Remove()
			settle() // pcscd has seen the removal (the provider holds it back)
			card = insertCard(ctx, t, w.pcscd, 1, vcard.UIDCard(uid))
			settle() // a quiet spell: the card back within the grace changes nothing, not even a card_reading
			if got := debounced(ev2); len(got) != 0 {
				t.Errorf("events after the card came back within the grace: %v; want none", got)
			}
			card.Remove()
			det := waitEvent(t, ev2, "detached")
			if det["reason"] != "token_removed" {
				t.Fatalf("card pulled for good: %v; want token_removed", det)
			}
		})
	})
	wg.Wait()
}

// readThenInserted waits for the card events of one card: card_reading
// first (no card or session event before it), then the card inserted as
// token, with no other card event in between. A reading ended by the
// card leaving before it was identified (a removal with no token: the
// virtual card can flicker as it connects) starts the wait again.
func readThenInserted(t *testing.T, evs <-chan map[string]any, token string) {
	t.Helper()
	for {
		rd := awaitEvent(t, evs, "card_reading", func(ev map[string]any) bool {
			if ev["event"] == "card" || ev["event"] == "attached" {
				t.Fatalf("%v before card_reading", ev)
			}
			return ev["event"] == "card_reading"
		})
		ev := awaitEvent(t, evs, "card inserted", func(ev map[string]any) bool {
			abandoned := ev["event"] == "card" && ev["kind"] == "removed" && ev["token"] == "" && ev["reader"] == rd["reader"]
			if !abandoned && (ev["event"] == "card_reading" || ev["event"] == "attached" ||
				ev["event"] == "card" && (ev["kind"] != "inserted" || ev["token"] != token || ev["reader"] != rd["reader"])) {
				t.Fatalf("after %v: %v; want %s inserted at its reader", rd, ev, token)
			}
			return ev["event"] == "card"
		})
		if ev["kind"] == "inserted" {
			return
		}
	}
}

// waitRefused waits for the broker's error event; a session is a failure.
func waitRefused(t *testing.T, evs <-chan map[string]any) map[string]any {
	t.Helper()
	return awaitEvent(t, evs, "refusal (error event)", func(ev map[string]any) bool {
		if ev["event"] == "attached" {
			t.Fatalf("got %v; want the token refused", ev)
		}
		return ev["event"] == "error"
	})
}

// quiet fails if evs holds a session event now.
func quiet(t *testing.T, evs <-chan map[string]any, what string) {
	t.Helper()
	testutil.Drain(evs, func(ev map[string]any) {
		if ev["event"] == "attached" {
			t.Fatalf("%s: %v; want no session", what, ev)
		}
	})
}

// debounced returns the session and card events already received.
func debounced(evs <-chan map[string]any) []map[string]any {
	var got []map[string]any
	for {
		select {
		case ev := <-evs:
			switch ev["event"] {
			case "attached", "detached", "challenge", "card", "card_reading":
				got = append(got, ev)
			}
		default:
			return got
		}
	}
}

// TestSeatE2E: readers attached to the broker's own host, mapped to a seat
// in hotdeskd's config, work like a terminal: a card there gets a session
// shown at terminal "seat-console".
func TestSeatE2E(t *testing.T) {
	t.Parallel()
	reader1 := pcscdtest.Readers[1][len(pcscdtest.Readers[1])-5:]
	dan := newLocalUser(t, "dan") // before the daemon, as in TestCardsE2E
	w := newCardWorld(t, fmt.Sprintf("seat \"console\" {\n  readers = [%q]\n  remove_grace = \"200ms\"\n}", reader1))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if out, err := w.ctlOut("token", "register", "uid.0a0b0c0d", "-user", dan); err != nil {
		t.Fatalf("register: %v %s", err, out)
	}
	card := insertCard(ctx, t, w.pcscd, 1, vcard.UIDCard([]byte{0x0a, 0x0b, 0x0c, 0x0d}))
	defer card.Remove()
	deadline := time.Now().Add(30 * time.Second)
	for {
		out, err := w.ctlOut("sessions", "-json")
		if err == nil && strings.Contains(string(out), `"terminal": "seat-console"`) && strings.Contains(string(out), `"user": "`+dan+`"`) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no session at seat-console: %s", out)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// newLocalUser creates a local account (no home, no login shell) named
// base and 4 random lower-case letters, and removes it when the test ends:
// hotdeskd registers cards to users this host knows. A name of the test's
// own is never removed under another test, nor shared with one (a desktop
// runs as its user when that is a local account); it returns the name.
func newLocalUser(t *testing.T, base string) string {
	t.Helper()
	name := testutil.UniqueName(t, base, 4)
	testutil.AddAccount(t, name)
	return name
}

// TestPairPhoneSIGTERMSaysCancelled: hotdesk-term -pcsc pair stopped by
// SIGTERM while it waits for a phone (real pcscd, no phone presented)
// says the pairing was cancelled, not that no phone came within the
// minute it had not waited, and exits 1: nothing was paired.
func TestPairPhoneSIGTERMSaysCancelled(t *testing.T) {
	t.Parallel()
	d := startPCSCD(t)
	bin := buildBinaries(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// No broker: a pairing dials only once it has a phone.
	cmd := exec.CommandContext(ctx, filepath.Join(bin, "hotdesk-term"), "-server", "127.0.0.1:1",
		"-pin", proto.FormatFingerprint(make([]byte, 32)), "-json", "-keystore", filepath.Join(t.TempDir(), "none.json"),
		"-pcsc", "pair", "ABCD-EFGH-JKMN")
	cmd.Env = append(os.Environ(), pcscEnv(d))
	var stderr strings.Builder
	cmd.Stderr = &stderr
	evs, _ := testutil.StartEvents(t, cmd, 64)
	waitEvent(t, evs, "waiting")
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	err := cmd.Wait()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 1 {
		t.Errorf("exit after SIGTERM: %v; want status 1", err)
	}
	if got := stderr.String(); !strings.Contains(got, "pair: pairing cancelled") || strings.Contains(got, "no phone presented") {
		t.Errorf("stderr %q; want it to say the pairing was cancelled", got)
	}
}
