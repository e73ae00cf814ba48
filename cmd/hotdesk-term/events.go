package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"
	"unicode"

	"github.com/hotdesk/hotdesk/proto"
	"github.com/hotdesk/hotdesk/tokens"
)

// event is one line of the agent's output: a name and ordered fields for
// JSON, and a human-readable line for text mode.
type event struct {
	name   string
	fields []field
	text   string
}

type field struct {
	key string
	val any
}

// Local error events carry code 0 and one of these names.
const (
	errCommand  = "command"         // a stdin command could not be carried out
	errRedirect = "redirect_failed" // a redirect could not be followed
	errNoKey    = "no_key"          // a challenge for a token not in the keystore
	errConnect  = "connect_failed"  // a connection attempt failed
	errDisplay  = "display_failed"  // the display client could not be started
	errPair     = "pair_failed"     // a pairing on the greeter ended without the broker's answer
)

func connectedEvent(server, addr string) event {
	return event{name: "connected",
		fields: []field{{"server", server}, {"addr", addr}},
		text:   fmt.Sprintf("connected to server %s at %s", clean(server), clean(addr))}
}

func challengeEvent(token string) event {
	return event{name: "challenge",
		fields: []field{{"token", token}},
		text:   fmt.Sprintf("challenge for token %s", clean(token))}
}

func promptEvent(p *proto.AuthPrompt) event {
	fields := []field{{"style", p.Style.String()}, {"text", p.Text}}
	if p.Token != "" {
		fields = append(fields, field{"token", p.Token})
	}
	return event{name: "prompt", fields: fields,
		text: fmt.Sprintf("prompt (%s): %s", p.Style, clean(p.Text))}
}

// withPromptFor adds to a prompt event which of several inserted tokens
// the prompt is for ("for": the card's reader, or the token), when more
// than one is inserted: the greeter then says whose login asks.
func (a *agent) withPromptFor(ev event, token string) event {
	if token == "" {
		return ev
	}
	n := len(a.cards)
	if a.prov != nil {
		n += len(a.prov.Inserted())
	}
	if n < 2 {
		return ev
	}
	what := token
	if r, ok := a.cards[token]; ok {
		what = "the card in " + r
	}
	ev.fields = append(ev.fields, field{"for", what})
	return ev
}

func attachedEvent(m *proto.Attached) event {
	how := "new"
	if m.Resumed {
		how = "resumed"
	}
	text := fmt.Sprintf("attached session %s on server %s (%s)", clean(m.SessionID), clean(m.ServerID), how)
	if m.User != "" {
		text += ", user " + clean(m.User)
	}
	text += fmt.Sprintf(", token %s, endpoint %s", clean(m.Token), clean(m.Endpoint))
	return event{name: "attached",
		fields: []field{{"session", m.SessionID}, {"token", m.Token}, {"user", m.User}, {"endpoint", m.Endpoint},
			{"server", m.ServerID}, {"resumed", m.Resumed}},
		text: text}
}

// streamEvent: the display stream of session is spliced through the
// gateway. client is attached → the display client connected to the local
// relay (0 if it was waiting already); gateway is the relay's dial, TLS
// handshake and ticket redemption at the attach gateway.
func streamEvent(session string, client, gateway time.Duration) event {
	msf := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	return event{name: "stream",
		fields: []field{{"session", session}, {"client_ms", msf(client)}, {"gateway_ms", msf(gateway)}},
		text:   fmt.Sprintf("display stream of session %s spliced (client %v, gateway %v)", clean(session), client.Round(time.Millisecond), gateway.Round(time.Millisecond))}
}

func detachedEvent(m *proto.Detached) event {
	fields := []field{{"session", m.SessionID}, {"reason", m.Reason.String()}}
	text := fmt.Sprintf("detached from session %s: %s", clean(m.SessionID), m.Reason)
	if m.Message != "" {
		fields = append(fields, field{"message", m.Message})
		text += " (" + clean(m.Message) + ")"
	}
	if m.Terminal != "" {
		fields = append(fields, field{"by", m.Terminal})
		text += " by terminal " + clean(m.Terminal)
	}
	return event{name: "detached", fields: fields, text: text}
}

func redirectEvent(m *proto.Redirect) event {
	return event{name: "redirect",
		fields: []field{{"server", m.ServerID}, {"addr", m.Addr}, {"fence", m.Fence}},
		text:   fmt.Sprintf("redirected to server %s at %s (fence %d)", clean(m.ServerID), clean(m.Addr), m.Fence)}
}

// protoErrorEvent reports an Error from a broker.
func protoErrorEvent(m *proto.Error) event {
	ev := errorEvent(int(m.Code), m.Code.String(), m.Message)
	if m.Token != "" {
		ev.fields = append(ev.fields, field{"token", m.Token})
		ev.text += " (token " + clean(m.Token) + ")"
	}
	if m.Detail != "" {
		ev.fields = append(ev.fields, field{"detail", m.Detail})
	}
	if m.RetryAfterMs > 0 {
		ev.fields = append(ev.fields, field{"retry_after_ms", int(m.RetryAfterMs)})
	}
	return ev
}

func errorEvent(code int, name, message string) event {
	text := "error " + clean(name)
	if code != 0 {
		text += fmt.Sprintf(" (%d)", code)
	}
	if message != "" {
		text += ": " + clean(message)
	}
	return event{name: "error",
		fields: []field{{"code", code}, {"name", name}, {"message", message}},
		text:   text}
}

func pairedEvent(m *proto.Paired) event {
	fields := []field{{"token", m.Token}}
	text := "paired token " + clean(m.Token)
	if m.User != "" {
		fields = append(fields, field{"user", m.User})
		text += " for user " + clean(m.User)
	}
	return event{name: "paired", fields: fields, text: text}
}

// pairPhoneEvent reports the phone a pairing took (at ev.Reader): its key
// is read and it is asked to sign the pairing.
func pairPhoneEvent(ev tokens.Event) event {
	return event{name: "pair_phone", fields: []field{{"token", ev.Token}, {"reader", ev.Reader}},
		text: fmt.Sprintf("pairing phone %s at %q", clean(ev.Token), clean(ev.Reader))}
}

// notPhoneEvent reports a card inserted while a phone pairing waits that
// is not a phone: the pairing ignores it, and it is not presented to the
// broker (not logged in).
func notPhoneEvent(ev tokens.Event) event {
	return event{name: "not_phone", fields: []field{{"token", ev.Token}, {"reader", ev.Reader}},
		text: fmt.Sprintf("card %s at %q is not a phone: ignored while a phone pairing waits", clean(ev.Token), clean(ev.Reader))}
}

// groupEvent reports the members of the group learned from a Welcome.
func groupEvent(ms []proto.Member) event {
	ids := make([]string, len(ms))
	addrs := make([]string, len(ms))
	for i, m := range ms {
		ids[i], addrs[i] = m.ServerID, m.Addr
	}
	return event{name: "group",
		fields: []field{{"servers", ids}, {"addrs", addrs}},
		text:   fmt.Sprintf("group: %d brokers (%s)", len(ms), clean(strings.Join(ids, ", ")))}
}

// reconnectingEvent announces the next connection attempt.
func reconnectingEvent(in time.Duration) event {
	return event{name: "reconnecting",
		fields: []field{{"in_ms", in.Milliseconds()}},
		text:   fmt.Sprintf("reconnecting in %s", in.Round(time.Millisecond))}
}

// pairAgainEvent announces a pairing's Pair sent again in in, why saying
// why its outcome is not known (the broker's unavailable, a connection
// ended).
func pairAgainEvent(why string, in time.Duration) event {
	return event{name: "waiting",
		fields: []field{{"reason", why}, {"in_ms", in.Milliseconds()}},
		text:   fmt.Sprintf("pairing not confirmed (%s); sending it again with the same key in %s", clean(why), in)}
}

func disconnectedEvent(err error) event {
	msg := "connection closed"
	if err != nil {
		msg = err.Error()
	}
	return event{name: "disconnected",
		fields: []field{{"error", msg}},
		text:   "disconnected: " + clean(msg)}
}

// status is what the "status" command reports.
type status struct {
	Connected bool
	Server    string
	Addr      string
	Hops      uint8
	Session   string
	Inserted  []string
}

func statusEvent(s status) event {
	inserted := s.Inserted
	if inserted == nil {
		inserted = []string{}
	}
	text := "status: not connected"
	if s.Connected {
		text = fmt.Sprintf("status: connected to server %s at %s", clean(s.Server), clean(s.Addr))
		if s.Hops > 0 {
			text += fmt.Sprintf(" (%d hops)", s.Hops)
		}
	}
	if len(inserted) > 0 {
		text += ", tokens inserted: " + strings.Join(inserted, ", ")
	} else {
		text += ", no token inserted"
	}
	if s.Session != "" {
		text += ", session " + clean(s.Session)
	}
	return event{name: "status",
		fields: []field{{"connected", s.Connected}, {"server", s.Server}, {"addr", s.Addr}, {"hops", s.Hops},
			{"session", s.Session}, {"inserted", inserted}},
		text: text}
}

// clean makes untrusted text safe for a terminal: unprintable characters
// (control characters, escape sequences) become U+FFFD.
func clean(s string) string {
	return strings.Map(func(r rune) rune {
		if unicode.IsPrint(r) {
			return r
		}
		return unicode.ReplacementChar
	}, s)
}

// emitter writes events, one line each, as JSON or text. It is safe for
// concurrent use.
type emitter struct {
	mu   sync.Mutex
	w    io.Writer
	json bool
	now  func() time.Time
	ui   func(event) // also sees every event, if set
}

func (e *emitter) emit(ev event) {
	if e.ui != nil {
		e.ui(ev)
	}
	line := ev.format(e.json, e.now())
	e.mu.Lock()
	defer e.mu.Unlock()
	_, _ = e.w.Write(line)
}

// format renders ev as one line ending in '\n'.
func (ev event) format(asJSON bool, now time.Time) []byte {
	if !asJSON {
		return []byte(ev.text + "\n")
	}
	var b bytes.Buffer
	b.WriteString(`{"event":`)
	writeJSON(&b, ev.name)
	for _, f := range ev.fields {
		b.WriteByte(',')
		writeJSON(&b, f.key)
		b.WriteByte(':')
		writeJSON(&b, f.val)
	}
	b.WriteString(`,"time":`)
	writeJSON(&b, now.Format(time.RFC3339Nano))
	b.WriteString("}\n")
	return b.Bytes()
}

func writeJSON(b *bytes.Buffer, v any) {
	out, err := json.Marshal(v)
	if err != nil {
		// Only plain strings, numbers, booleans and string slices are
		// used; this cannot happen.
		out = []byte(`null`)
	}
	b.Write(out)
}

// cardEventOf describes a card reader event:
// {"event":"card","kind":"inserted|removed|error","token":…,"reader":…,"error":…};
// a removed event with an empty token is a card that left its reader
// before it was identified (it ends a card_reading). A Reading is
// {"event":"card_reading","reader":…}: a card is in the reader and being
// identified (the terminal shows "Reading your card…" at once); one card
// event at that reader follows it: inserted, error, or removed with an
// empty token.
func cardEventOf(ev tokens.Event) event {
	if ev.Kind == tokens.Reading {
		return event{name: "card_reading", fields: []field{{"reader", ev.Reader}},
			text: fmt.Sprintf("Reading card… (reader %q)", clean(ev.Reader))}
	}
	f := []field{{"kind", ev.Kind.String()}, {"token", ev.Token}, {"reader", ev.Reader}}
	text := fmt.Sprintf("card %s: %s at %q", ev.Kind, clean(ev.Token), clean(ev.Reader))
	if ev.Kind == tokens.Removed && ev.Token == "" {
		text = fmt.Sprintf("card removed at %q before it was identified", clean(ev.Reader))
	}
	if ev.Err != nil {
		f = append(f, field{"error", ev.Err.Error()})
		text = fmt.Sprintf("card error at %q: %s", clean(ev.Reader), clean(ev.Err.Error()))
	}
	return event{name: "card", fields: f, text: text}
}
