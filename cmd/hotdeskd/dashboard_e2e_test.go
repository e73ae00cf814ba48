package main

import (
	"bytes"
	"context"
	"fmt"
	"image/png"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hotdesk/hotdesk/internal/linkemu"
	"github.com/hotdesk/hotdesk/internal/testutil"

	"github.com/chromedp/chromedp"
)

// startDashboardGroup starts a one-broker group whose dashboard listens on
// the returned address: its logins are the pam_matrix users of passdb
// ("user:password:hotdesk-admin" lines), admins the group "daemon"; extra
// goes into the dashboard block.
func startDashboardGroup(t *testing.T, passdb, extra string) (*testGroup, string) {
	t.Helper()
	pamDir := testutil.MatrixServices(t, t.TempDir(), passdb, "", "hotdesk-admin")
	dashAddr := testutil.FreeAddr(t)
	return startGroup(t, 1, fmt.Sprintf(`admin_group = "daemon"
auth {
  pam_dir = %q
  open_session = false
}
dashboard {
  listen = %q
  %s
}`, pamDir, dashAddr, extra)), dashAddr
}

// needChromium finds Debian's chromium; with CI=true its absence fails.
func needChromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	testutil.SkipOrFail(t, "chromium not installed (Debian package chromium)")
	return ""
}

// startBrowser starts a headless chromium with its own profile in dir;
// stop ends it (call it in any case).
func startBrowser(path, dir string) (ctx context.Context, stop func(), err error) {
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.NoSandbox,                               // tests run as root
		chromedp.Flag("ignore-certificate-errors", true), // the broker's self-signed certificate
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.WindowSize(1280, 900),
		chromedp.UserDataDir(dir),
	)
	actx, cancelA := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelC := chromedp.NewContext(actx)
	stop = func() { cancelC(); cancelA() }
	// The first call starts the browser: no timeout on it (a timeout would
	// stop the browser when it fires); every later step gets one (step).
	if err := chromedp.Do(ctx, chromedp.Navigate("about:blank")); err != nil {
		return nil, stop, fmt.Errorf("starting chromium: %w", err)
	}
	return ctx, stop, nil
}

// secondLogin returns a tab of ctx's browser in a browser context of its
// own: none of ctx's cookies, as a second browser would be, without
// starting one.
func secondLogin(t *testing.T, ctx context.Context) context.Context {
	t.Helper()
	sctx, cancel := chromedp.NewContext(ctx, chromedp.WithNewBrowserContext())
	t.Cleanup(cancel)
	// The first call opens the tab: no timeout on it, as in browser.
	if err := chromedp.Do(sctx, chromedp.Navigate("about:blank")); err != nil {
		t.Fatalf("opening a second browser context: %v", err)
	}
	return sctx
}

// step runs browser actions with a bound of their own.
func step(ctx context.Context, actions ...chromedp.Action[chromedp.Void]) error {
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	return chromedp.Do(sctx, actions...)
}

// shot takes a screenshot of the page, checks it is a real picture (not
// blank) and saves it for people to look at.
func shot(t *testing.T, ctx context.Context, dir, name string) {
	t.Helper()
	buf, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot %s: %v", name, err)
	}
	img, err := png.Decode(bytes.NewReader(buf))
	if err != nil {
		t.Fatalf("screenshot %s: not a PNG: %v", name, err)
	} else {
		b := img.Bounds()
		first := img.At(b.Min.X, b.Min.Y)
		uniform := true
		for y := b.Min.Y; y < b.Max.Y && uniform; y += 7 {
			for x := b.Min.X; x < b.Max.X; x += 7 {
				if img.At(x, y) != first {
					uniform = false
					break
				}
			}
		}
		if uniform {
			t.Errorf("screenshot %s is blank", name)
		}
	}
	if len(buf) < 2000 {
		t.Errorf("screenshot %s is only %d bytes", name, len(buf))
	}
	if err := os.WriteFile(filepath.Join(dir, name+".png"), buf, 0o644); err != nil {
		t.Fatal(err)
	}
}

// text returns the page's visible text.
func text(t *testing.T, ctx context.Context) string {
	t.Helper()
	s, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS("body")))
	if err != nil {
		t.Fatalf("page text: %v", err)
	}
	return s
}

func visit(t *testing.T, ctx context.Context, url string) string {
	t.Helper()
	if err := step(ctx, chromedp.Navigate(url), chromedp.WaitVisible(chromedp.CSS("footer"))); err != nil {
		t.Fatalf("visit %s: %v", url, err)
	}
	return text(t, ctx)
}

func logIn(t *testing.T, ctx context.Context, base, user, password string) string {
	t.Helper()
	if err := step(ctx, chromedp.Navigate(base+"/login"), chromedp.WaitVisible(chromedp.CSS("#login-form")),
		chromedp.SendKeys(chromedp.CSS("#user"), user), chromedp.SendKeys(chromedp.CSS("#password"), password)); err != nil {
		t.Fatalf("log in as %s: %v", user, err)
	}
	submitAndWait(t, ctx, "#login-submit")
	return text(t, ctx)
}

// submitAndWait clicks the submit button sel and waits for the page that
// the form's POST leads to.
func submitAndWait(t *testing.T, ctx context.Context, sel string) {
	t.Helper()
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if _, err := chromedp.RunResponse(sctx, chromedp.Click(chromedp.CSS(sel))); err != nil {
		t.Fatalf("submit %s: %v", sel, err)
	}
	if err := step(ctx, chromedp.WaitVisible(chromedp.CSS("footer"))); err != nil {
		t.Fatalf("page after submitting %s: %v", sel, err)
	}
}

// TestDashboardInChromium logs in to the real dashboard of a real hotdeskd
// in headless Chromium (PAM through pam_matrix; "daemon" is in the admin
// group, "bin" in the read-only group), sees a session a real terminal
// created, kills it, pairs a token (code and QR shown), watches a live
// event arrive, and checks a screenshot of every page. A read-only login
// sees no actions; a wrong password is refused. Budget: about 30-60 s.
func TestDashboardInChromium(t *testing.T) {
	t.Parallel() // its own group, browser profiles and ports
	chromium := needChromium(t)
	testutil.NeedMatrix(t)
	// No address of the host may come or go while the browser loads a
	// page (it fails it with net::ERR_NETWORK_CHANGED): the emulated
	// links of tests beside this one wait to be made or removed.
	quiet, err := linkemu.QuietHost()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(quiet)
	// The browser starts while the group does.
	var br struct {
		ctx  context.Context
		stop func()
		err  error
	}
	profile := t.TempDir()
	brStarted := make(chan struct{})
	go func() {
		defer close(brStarted)
		br.ctx, br.stop, br.err = startBrowser(chromium, profile)
	}()
	t.Cleanup(func() { <-brStarted; br.stop() }) // before profile is removed
	g, dashAddr := startDashboardGroup(t, "daemon:admin-pw:hotdesk-admin\nbin:viewer-pw:hotdesk-admin\n", `readonly_group = "bin"`)
	b1 := g.brokers[0]
	base := "https://" + dashAddr
	shots := t.TempDir()
	if d := os.Getenv("HOTDESK_SCREENSHOTS"); d != "" {
		shots = d
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}

	// A session created by a real terminal.
	ks := g.enroll(b1, b1, "alice")
	t1 := g.terminal("t-1", b1, ks)
	t1.send("insert default")
	sid := fmt.Sprint(next(t, t1.evs, "attached")["session"])

	<-brStarted
	if br.err != nil {
		t.Fatal(br.err)
	}
	ctx := br.ctx
	// A wrong password is refused.
	if got := logIn(t, ctx, base, "daemon", "wrong"); !strings.Contains(got, "Login failed") {
		t.Fatalf("wrong password: page says %q", got)
	}
	shot(t, ctx, shots, "login-refused")
	if got := logIn(t, ctx, base, "daemon", "admin-pw"); !strings.Contains(got, "daemon (admin)") {
		t.Fatalf("after login:\n%s", got)
	}
	if got := visit(t, ctx, base+"/sessions"); !strings.Contains(got, sid) || !strings.Contains(got, "t-1") {
		t.Fatalf("sessions page after login lacks session %s at t-1:\n%s", sid, got)
	}
	shot(t, ctx, shots, "sessions")

	if got := visit(t, ctx, base+"/servers"); !strings.Contains(got, "b1") || !strings.Contains(got, "ready") || !strings.Contains(got, "daemon (admin)") {
		t.Errorf("servers page:\n%s", got)
	}
	shot(t, ctx, shots, "servers")
	if got := visit(t, ctx, base+"/terminals"); !strings.Contains(got, "t-1") || !strings.Contains(got, sid) {
		t.Errorf("terminals page:\n%s", got)
	}
	shot(t, ctx, shots, "terminals")

	// Pair a token: the code as text and as a QR image.
	visit(t, ctx, base+"/tokens")
	if err := step(ctx, chromedp.SendKeys(chromedp.CSS(`#pair-form input[name="user"]`), "bob")); err != nil {
		t.Fatal(err)
	}
	submitAndWait(t, ctx, "#pair-form button")
	code, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS("#pair-code")))
	if err != nil {
		t.Fatal(err)
	}
	qrAttr, err := chromedp.Run(ctx, chromedp.AttributeValue(chromedp.CSS("#pair-qr"), "src"))
	if err != nil {
		t.Fatal(err)
	}
	qr := qrAttr.Value
	if len(strings.TrimSpace(code)) != 14 || !strings.HasPrefix(qr, "data:image/png;base64,") {
		t.Errorf("pair code %q, qr %.40q", code, qr)
	}
	if got := text(t, ctx); !strings.Contains(got, "soft.") || !strings.Contains(got, "bob") {
		t.Errorf("tokens page lacks the enrolled token or the pending code:\n%s", got)
	}
	shot(t, ctx, shots, "tokens")

	// Live events: an event that happens while the page is open shows up.
	if got := visit(t, ctx, base+"/events"); !strings.Contains(got, "attached") {
		t.Errorf("events page lacks the attach:\n%s", got)
	}
	if err := step(ctx, chromedp.WaitVisible(`//span[@id="live-state" and text()="connected"]`)); err != nil {
		t.Fatalf("live stream not connected: %v", err)
	}
	t1.send("remove default")
	if err := step(ctx, chromedp.WaitVisible(`//tr[@class="live"]/td[text()="suspended"]`)); err != nil {
		t.Fatalf("live suspended event not shown: %v", err)
	}
	// A live row shows its time as the rows the page came with do
	// (15:04:05.000), not in the browser's locale ("1:54:05 PM.049").
	times, err := chromedp.Run(ctx, chromedp.Evaluate[[]string](
		`Array.from(document.querySelectorAll("#event-rows tr"), r => (r.className === "live" ? "live " : "page ") + r.cells[0].textContent)`))
	if err != nil {
		t.Fatal(err)
	}
	timeRe := regexp.MustCompile(`^(live|page) \d\d:\d\d:\d\d\.\d\d\d$`)
	for _, tm := range times {
		if !timeRe.MatchString(tm) {
			t.Errorf("event row time %q; want HH:MM:SS.mmm as every row", tm)
		}
	}
	if !slices.ContainsFunc(times, func(s string) bool { return strings.HasPrefix(s, "live ") }) {
		t.Errorf("no live row among %q", times)
	}
	shot(t, ctx, shots, "events")

	// Kill the session from the sessions page.
	visit(t, ctx, base+"/sessions")
	submitAndWait(t, ctx, "#kill-"+sid)
	if got := text(t, ctx); !strings.Contains(got, "session "+sid+" killed") || !strings.Contains(got, "no sessions") {
		t.Errorf("after kill:\n%s", got)
	}
	shot(t, ctx, shots, "sessions-killed")
	if ss := g.sessions(b1); len(ss) != 0 {
		t.Errorf("hotdeskctl sessions after the dashboard's kill: %+v", ss)
	}

	// A read-only login sees but cannot act.
	ro := secondLogin(t, ctx)
	t1.send("insert default")
	next(t, t1.evs, "attached")
	if got := logIn(t, ro, base, "bin", "viewer-pw"); !strings.Contains(got, "bin (read-only)") {
		t.Fatalf("read-only login:\n%s", got)
	}
	kills, err := chromedp.Run(ro, chromedp.Evaluate[int](`document.querySelectorAll("form[action$='/kill']").length`))
	if err != nil {
		t.Fatal(err)
	}
	if kills != 0 {
		t.Errorf("read-only user sees %d kill buttons", kills)
	}
	shot(t, ro, shots, "sessions-readonly")
	t.Logf("screenshots in %s", shots)
}
