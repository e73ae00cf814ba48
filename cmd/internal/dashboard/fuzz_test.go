package dashboard

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
)

// browserURL is what a browser makes of a Location header (the WHATWG URL
// parser): leading and trailing C0 controls and spaces dropped, tabs and
// newlines removed anywhere, "\" read as "/" in an http(s) URL.
func browserURL(loc string) string {
	loc = strings.TrimFunc(loc, func(r rune) bool { return r <= ' ' })
	loc = strings.Map(func(r rune) rune {
		if r == '\t' || r == '\n' || r == '\r' {
			return -1
		}
		return r
	}, loc)
	return strings.ReplaceAll(loc, `\`, "/")
}

// FuzzSafeNext: the page a login goes on to ("next", from a link anyone
// can send an administrator) stays on the dashboard's site, as the browser
// reads the redirect.
func FuzzSafeNext(f *testing.F) {
	for _, s := range []string{"/sessions?user=alice", "//evil.example", `/\evil.example`, "https://evil.example/",
		"/\n/evil.example", " //evil.example", "/%2F/evil.example", "/./", "", "sessions"} {
		f.Add(s)
	}
	base, _ := url.Parse("https://dash.example:4443/login")
	f.Fuzz(func(t *testing.T, next string) {
		got := safeNext(next)
		w := httptest.NewRecorder()
		http.Redirect(w, httptest.NewRequest(http.MethodPost, base.String(), nil), got, http.StatusSeeOther)
		// net/http writes a newline in a header value as a space.
		loc := strings.NewReplacer("\n", " ", "\r", " ").Replace(w.Header().Get("Location"))
		u, err := base.Parse(browserURL(loc))
		if err != nil {
			return // the browser does not follow it either
		}
		if u.Scheme != base.Scheme || u.Host != base.Host {
			t.Fatalf("next %q: redirect to %q leaves the site (%s)", next, loc, u)
		}
	})
}
