package main

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"time"

	"github.com/hotdesk/hotdesk/tokens/nfc"
	"github.com/hotdesk/hotdesk/tokens/pcsc/pcscdtest"
	"github.com/hotdesk/hotdesk/tokens/pcsc/vcard"
)

// cardScript is `make demo-card`: a private pcscd with the two vpcd virtual
// readers, one hotdeskd, two terminal agents each watching one reader
// (-pcsc), a virtual contactless card (UID) registered to a user with
// hotdeskctl token register, and a virtual phone (HCE) enrolled for the same
// user with a pairing code. The card goes into reader 0, is pulled, goes
// into reader 1: the session follows; then the phone, from reader 1 to
// reader 0, proving its key by signing the broker's challenge over NFC. Each step prints the reader's part (pcscd noticing the card,
// card connect → the agent's card event) apart from the broker's part (the
// agent's card event → attached).
func (d *demo) cardScript(ctx context.Context) error {
	fmt.Println("hotdesk card demo: private pcscd + vpcd, a virtual card moved between two readers")
	fmt.Println()
	d.start = time.Now()
	pcscd, err := pcscdtest.Start() // sets PCSCLITE_CSOCK_NAME for the agents
	if err != nil {
		return fmt.Errorf("pcscd with the vpcd driver (Debian packages pcscd, vsmartcard-vpcd): %w", err)
	}
	defer pcscd.Close()
	d.step("private pcscd ready with readers %q and %q", pcscdtest.Readers[0], pcscdtest.Readers[1])
	n1, err := d.startFirst(ctx)
	if err != nil {
		return err
	}
	d.step("hotdeskd demo-1 ready on %s", n1.addr)
	const token = "uid.04a1b2c3"
	// hotdeskd registers cards to users this host knows only.
	if _, err := user.Lookup("demo"); err != nil {
		added, err := addUser(ctx, "demo")
		if err != nil {
			return err
		}
		if added {
			d.userAdded = "demo"
		}
	}
	ks := filepath.Join(d.dir, "none.json")
	phone, phoneOut, err := d.pairPhone(ctx, n1, pcscd, ks)
	if err != nil {
		return err
	}
	if out, err := exec.CommandContext(ctx, filepath.Join(d.bin, "hotdeskctl"), "-socket", n1.socket,
		"token", "register", token, "-user", "demo", "-label", "badge").CombinedOutput(); err != nil {
		return fmt.Errorf("hotdeskctl token register: %v: %s", err, out)
	}
	d.step("admin registered card %s to user demo (hotdeskctl token register)", token)
	t1, err := d.terminal(ctx, "desk-1", ks, n1, "-pcsc", "-readers", "00 01", "-remove-grace", "300ms")
	if err != nil {
		return err
	}
	// Nobody watches reader 0 since the pairing: let pcscd see the phone
	// leave it (its next poll) before desk-0's agent looks at the reader.
	time.Sleep(time.Until(phoneOut.Add(time.Second)))
	t0, err := d.terminal(ctx, "desk-0", ks, n1, "-pcsc", "-readers", "00 00", "-remove-grace", "300ms")
	if err != nil {
		return err
	}
	if err := connected(ctx, t0, t1); err != nil {
		return err
	}
	d.step("terminal agents desk-0 (reader 00 00) and desk-1 (reader 00 01) connected")

	uid := []byte{0x04, 0xa1, 0xb2, 0xc3}
	if err := d.moveCard(ctx, []*term{t0, t1}, pcscd, "card", func() vcard.Card { return vcard.UIDCard(uid) }); err != nil {
		return err
	}
	// The phone: the other way round, desk-1 first. The broker's part now
	// includes the challenge signed by the phone over NFC.
	if err := d.moveCard(ctx, []*term{t1, t0}, pcscd, "phone", func() vcard.Card { return vcard.PhoneCard(phone) }); err != nil {
		return err
	}
	for _, t := range []*term{t0, t1} {
		t.cmd("quit")
	}
	d.stopAll()
	fmt.Println("\ncard demo ok: pcscd polls vpcd about every 0.4 s, so the reader's part dominates; real CCID readers report cards by interrupt")
	return nil
}

// addUser adds local user name (own group, no home, no login shell),
// retrying while another process (a daemon creating a pooled kiosk account,
// say) holds the lock of /etc/passwd. added is false when another process
// added the user meanwhile.
func addUser(ctx context.Context, name string) (added bool, err error) {
	var out []byte
	for attempt := 1; attempt <= 5; attempt++ {
		out, err = exec.CommandContext(ctx, "useradd", "--user-group", "--no-create-home", "--shell", "/usr/sbin/nologin", name).CombinedOutput()
		if err == nil {
			return true, nil
		}
		if _, lerr := user.Lookup(name); lerr == nil {
			return false, nil
		}
		time.Sleep(time.Duration(attempt) * 100 * time.Millisecond)
	}
	return false, fmt.Errorf("useradd %s: %v: %s", name, err, out)
}

func msSince(a, b time.Time) float64 { return float64(b.Sub(a).Microseconds()) / 1000 }

// moveCard puts a new card from mk into the reader of each terminal in
// turn (terminal i watches reader i of terms' order: desk-0 reader 0,
// desk-1 reader 1), checks that the same session follows, and pulls it.
// The next card goes in once the agent has seen the last one leave (its
// "detached" event): pcscd noticed the removal, so vpcd shows the new card
// as a new one.
func (d *demo) moveCard(ctx context.Context, terms []*term, pcscd *pcscdtest.Daemon, what string, mk func() vcard.Card) error {
	session := ""
	for _, t := range terms {
		reader := 0
		if t.name == "desk-1" {
			reader = 1
		}
		start := time.Now()
		card, err := vcard.Insert(ctx, pcscd.Port(reader), mk())
		if err != nil {
			return err
		}
		if _, err := t.wait(ctx, "card"); err != nil {
			card.Remove()
			return err
		}
		seen := time.Now()
		att, err := t.wait(ctx, "attached")
		if err != nil {
			card.Remove()
			return err
		}
		attached := time.Now()
		how := "created"
		switch {
		case session == "" && att["resumed"] == true:
			how = "resumed"
		case session != "" && (att["session"] != session || att["resumed"] != true):
			card.Remove()
			return fmt.Errorf("%s at %s: session %v; want %s resumed", what, t.name, att["session"], session)
		case session != "":
			how = "resumed"
		}
		session, _ = att["session"].(string)
		d.step("%s %s into reader %d at %s → session %s %s  [reader/pcscd %.1f ms, broker %.1f ms]",
			what, att["token"], reader, t.name, session, how, msSince(start, seen), msSince(seen, attached))
		start = time.Now()
		if err := card.Remove(); err != nil {
			return err
		}
		det, err := t.wait(ctx, "detached")
		if err != nil {
			return err
		}
		d.step("%s pulled from reader %d → %v (after pcscd's detection and the 300 ms removal grace)  [%.1f ms]",
			what, reader, det["reason"], msSince(start, time.Now()))
	}
	return nil
}

// pairPhone enrolls a virtual phone for user demo with a pairing code, as
// a person would: the admin creates the code, the terminal agent on reader
// 0 waits for the phone and reads its public key over NFC. It returns the
// phone and when it left the reader.
func (d *demo) pairPhone(ctx context.Context, n *node, pcscd *pcscdtest.Daemon, keystore string) (*nfc.Phone, time.Time, error) {
	var pr struct{ Code string }
	if err := d.ctlJSON(ctx, n, &pr, "token", "pair", "-user", "demo", "-label", "demo phone", "-json"); err != nil {
		return nil, time.Time{}, err
	}
	d.step("admin created pairing code %s (hotdeskctl token pair)", pr.Code)
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, time.Time{}, err
	}
	phone := &nfc.Phone{Key: key}
	pctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	cmd := exec.CommandContext(pctx, filepath.Join(d.bin, "hotdesk-term"), "-server", n.addr, "-pin", n.pin,
		"-id", "desk-0", "-keystore", keystore, "-json", "-pcsc", "-readers", "00 00", "pair", pr.Code)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, time.Time{}, err
	}
	logf, err := os.Create(filepath.Join(d.dir, "pair.log"))
	if err != nil {
		return nil, time.Time{}, err
	}
	defer logf.Close()
	cmd.Stderr = logf
	if err := cmd.Start(); err != nil {
		return nil, time.Time{}, fmt.Errorf("pair: %w", err)
	}
	defer cmd.Wait()
	sc := bufio.NewScanner(stdout)
	var card *vcard.Inserted
	defer func() {
		if card != nil {
			card.Remove()
		}
	}()
	for sc.Scan() {
		var ev map[string]any
		if json.Unmarshal(sc.Bytes(), &ev) != nil {
			continue
		}
		switch ev["event"] {
		case "waiting":
			if card, err = vcard.Insert(ctx, pcscd.Port(0), vcard.PhoneCard(phone)); err != nil {
				return nil, time.Time{}, err
			}
		case "paired":
			if ev["token"] != phone.TokenID() {
				return nil, time.Time{}, fmt.Errorf("pair: paired %v; want %s", ev["token"], phone.TokenID())
			}
			d.step("phone %s presented at reader 0 and enrolled for user demo (hotdesk-term -pcsc pair)", phone.TokenID())
			card.Remove()
			card = nil
			return phone, time.Now(), nil
		case "error":
			return nil, time.Time{}, fmt.Errorf("pair: %v", ev["message"])
		}
	}
	return nil, time.Time{}, fmt.Errorf("pair: hotdesk-term ended without pairing (log %s)", logf.Name())
}
