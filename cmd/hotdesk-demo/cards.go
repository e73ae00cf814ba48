package main

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/hotdesk/hotdesk/tokens/pcsc/pcscdtest"
	"github.com/hotdesk/hotdesk/tokens/pcsc/vcard"
)

// cardScript is `make demo-card`: a private pcscd with the two vpcd virtual
// readers, one hotdeskd, two terminal agents each watching one reader
// (-pcsc), and a virtual contactless card (UID) registered to a user. The
// card goes into reader 0, is pulled, goes into reader 1: the session
// follows. Each step prints the reader's part (pcscd noticing the card,
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
	if err := d.writePAM(); err != nil {
		return err
	}
	n1, err := d.startNode(ctx, "demo-1")
	if err != nil {
		return err
	}
	d.step("hotdeskd demo-1 ready on %s", n1.addr)
	const token = "uid.04a1b2c3"
	if out, err := exec.CommandContext(ctx, filepath.Join(d.bin, "hotdeskctl"), "-socket", n1.socket,
		"token", "register", token, "-user", "demo", "-label", "badge").CombinedOutput(); err != nil {
		return fmt.Errorf("hotdeskctl token register: %v: %s", err, out)
	}
	d.step("admin registered card %s to user demo (hotdeskctl token register)", token)

	ks := filepath.Join(d.dir, "none.json")
	t0, err := d.terminal(ctx, "desk-0", ks, n1, "-pcsc", "-readers", "00 00", "-remove-grace", "300ms")
	if err != nil {
		return err
	}
	t1, err := d.terminal(ctx, "desk-1", ks, n1, "-pcsc", "-readers", "00 01", "-remove-grace", "300ms")
	if err != nil {
		return err
	}
	for _, t := range []*term{t0, t1} {
		if _, err := t.wait(ctx, "connected"); err != nil {
			return err
		}
	}
	d.step("terminal agents desk-0 (reader 00 00) and desk-1 (reader 00 01) connected")

	uid := []byte{0x04, 0xa1, 0xb2, 0xc3}
	session := ""
	for i, t := range []*term{t0, t1} {
		start := time.Now()
		card, err := vcard.Insert(ctx, pcscd.Port(i), vcard.UIDCard(uid))
		if err != nil {
			return err
		}
		if _, err := t.wait(ctx, "card"); err != nil {
			return err
		}
		seen := time.Now()
		att, err := t.wait(ctx, "attached")
		if err != nil {
			return err
		}
		attached := time.Now()
		if session == "" {
			session = att["session"].(string)
		} else if att["session"] != session || att["resumed"] != true {
			return fmt.Errorf("card at %s: session %v; want %s resumed", t.name, att["session"], session)
		}
		how := "created"
		if i > 0 {
			how = "resumed"
		}
		d.step("card into reader %d at %s → session %s %s  [reader/pcscd %.1f ms, broker %.1f ms]",
			i, t.name, session, how, msSince(start, seen), msSince(seen, attached))
		start = time.Now()
		if err := card.Remove(); err != nil {
			return err
		}
		det, err := t.wait(ctx, "detached")
		if err != nil {
			return err
		}
		d.step("card pulled from reader %d → %v (after pcscd's detection and the 300 ms removal grace)  [%.1f ms]",
			i, det["reason"], msSince(start, time.Now()))
		time.Sleep(time.Second) // vpcd shows no card swapped within one pcscd poll
	}
	for _, t := range []*term{t0, t1} {
		t.cmd("quit")
	}
	d.stopAll()
	fmt.Println("\ncard demo ok: pcscd polls vpcd about every 0.4 s, so the reader's part dominates; real CCID readers report cards by interrupt")
	return nil
}

func msSince(a, b time.Time) float64 { return float64(b.Sub(a).Microseconds()) / 1000 }
