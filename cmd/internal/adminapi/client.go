package adminapi

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/hotdesk/hotdesk/internal/event"
)

// Bounds of the client.
const (
	// DefaultClientTimeout bounds one call when ctx has no earlier deadline.
	DefaultClientTimeout = 30 * time.Second
	// maxResponseBytes bounds a response body (a list of 10,000 sessions is
	// a few MiB).
	maxResponseBytes = 64 << 20
	maxErrorBytes    = 64 << 10
)

// StatusError is a non-2xx answer. It unwraps to the sentinel matching its
// status (ErrNotFound, ErrForbidden, ErrInvalid, ErrNotReady), if any.
type StatusError struct {
	Op      string // "sessions", "kill session", "pair token", "ready", "live"
	Status  int
	Message string // the server's ErrorResponse.Error, or the body's text
}

func (e *StatusError) Error() string {
	// The server's message is often one of this package's errors too:
	// say "adminapi:" once.
	msg := strings.TrimPrefix(e.Message, "adminapi: ")
	return fmt.Sprintf("adminapi: %s: %s (%d %s)", e.Op, msg, e.Status, http.StatusText(e.Status))
}

// Unwrap returns the sentinel for the status.
func (e *StatusError) Unwrap() error {
	switch e.Status {
	case http.StatusNotFound:
		return ErrNotFound
	case http.StatusForbidden:
		return ErrForbidden
	case http.StatusBadRequest, http.StatusRequestEntityTooLarge:
		return ErrInvalid
	case http.StatusServiceUnavailable:
		return ErrNotReady
	}
	return nil
}

// Client talks to a Server over its unix socket. It is safe for concurrent
// use; connections are reused.
type Client struct {
	hc *http.Client
}

// NewClient returns a client for the admin socket at socketPath. Nothing is
// dialled until the first call.
func NewClient(socketPath string) *Client {
	var d net.Dialer
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return d.DialContext(ctx, "unix", socketPath)
		},
		MaxIdleConns:          2,
		IdleConnTimeout:       30 * time.Second,
		ResponseHeaderTimeout: DefaultClientTimeout,
		DisableCompression:    true,
	}
	return &Client{hc: &http.Client{Transport: tr, Timeout: DefaultClientTimeout}}
}

// Close releases idle connections.
func (c *Client) Close() { c.hc.CloseIdleConnections() }

// Sessions lists the sessions.
func (c *Client) Sessions(ctx context.Context) ([]SessionInfo, error) {
	return c.SessionsFiltered(ctx, SessionFilter{})
}

// KillSession destroys a session; an unknown id returns an error matching
// ErrNotFound.
func (c *Client) KillSession(ctx context.Context, id string) error {
	if id == "" {
		return fmt.Errorf("adminapi: kill session: %w: empty id", ErrInvalid)
	}
	return c.do(ctx, "kill session", http.MethodDelete, "/v1/sessions/"+url.PathEscape(id), nil, nil)
}

// PairToken asks for a pairing code.
func (c *Client) PairToken(ctx context.Context, req PairRequest) (PairResponse, error) {
	var out PairResponse
	if err := c.do(ctx, "pair token", http.MethodPost, "/v1/tokens/pair", req, &out); err != nil {
		return PairResponse{}, err
	}
	return out, nil
}

// Tokens lists the token registry.
func (c *Client) Tokens(ctx context.Context) ([]TokenInfo, error) {
	return getList[TokenInfo](ctx, c, "tokens", "/v1/tokens")
}

// RegisterToken registers a locate-only token to a user.
func (c *Client) RegisterToken(ctx context.Context, req RegisterRequest) (TokenInfo, error) {
	var out TokenInfo
	err := c.do(ctx, "register token", http.MethodPost, "/v1/tokens", req, &out)
	return out, err
}

// AliasToken registers id to the user of token req.Of.
func (c *Client) AliasToken(ctx context.Context, id string, req AliasRequest) (TokenInfo, error) {
	var out TokenInfo
	err := c.do(ctx, "alias token", http.MethodPost, "/v1/tokens/"+url.PathEscape(id)+"/alias", req, &out)
	return out, err
}

// SetTokenDisabled disables or enables a token.
func (c *Client) SetTokenDisabled(ctx context.Context, id string, disabled bool) error {
	verb := "enable"
	if disabled {
		verb = "disable"
	}
	return c.do(ctx, verb+" token", http.MethodPost, "/v1/tokens/"+url.PathEscape(id)+"/"+verb, nil, nil)
}

// DeleteToken removes a token.
func (c *Client) DeleteToken(ctx context.Context, id string) error {
	return c.do(ctx, "delete token", http.MethodDelete, "/v1/tokens/"+url.PathEscape(id), nil, nil)
}

// Servers lists the group's members.
func (c *Client) Servers(ctx context.Context) ([]ServerInfo, error) {
	return getList[ServerInfo](ctx, c, "servers", "/v1/servers")
}

// SetDraining drains or undrains server id ("self" for the daemon's own).
func (c *Client) SetDraining(ctx context.Context, id string, draining bool) error {
	if id == "" {
		id = "self"
	}
	verb := "undrain"
	if draining {
		verb = "drain"
	}
	return c.do(ctx, verb, http.MethodPost, "/v1/servers/"+url.PathEscape(id)+"/"+verb, nil, nil)
}

// Ready returns nil when the daemon is ready, an error matching ErrNotReady
// (with the daemon's reason) when it is not, or the transport error.
func (c *Client) Ready(ctx context.Context) error {
	return c.do(ctx, "ready", http.MethodGet, "/readyz", nil, nil)
}

// Live returns nil when the daemon answers.
func (c *Client) Live(ctx context.Context) error {
	return c.do(ctx, "live", http.MethodGet, "/livez", nil, nil)
}

func (c *Client) do(ctx context.Context, op, method, path string, in, out any) error {
	_, err := c.doHeader(ctx, op, method, path, in, out)
	return err
}

// doHeader is do returning the response's header as well (nil on a
// failure).
func (c *Client) doHeader(ctx context.Context, op, method, path string, in, out any) (http.Header, error) {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return nil, fmt.Errorf("adminapi: %s: %w", op, err)
		}
		body = bytes.NewReader(b)
	}
	// The host is ignored: the transport always dials the socket.
	req, err := http.NewRequestWithContext(ctx, method, "http://hotdesk"+path, body)
	if err != nil {
		return nil, fmt.Errorf("adminapi: %s: %w", op, err)
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("adminapi: %s: %w", op, err)
	}
	defer resp.Body.Close()

	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return nil, statusError(op, resp)
	}
	if out == nil {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxErrorBytes))
		return resp.Header, nil
	}
	lr := &io.LimitedReader{R: resp.Body, N: maxResponseBytes + 1}
	if err := json.NewDecoder(lr).Decode(out); err != nil {
		if lr.N <= 0 {
			return nil, fmt.Errorf("adminapi: %s: response over %d bytes", op, maxResponseBytes)
		}
		return nil, fmt.Errorf("adminapi: %s: decode response: %w", op, err)
	}
	return resp.Header, nil
}

// getList GETs the listing at path.
func getList[T any](ctx context.Context, c *Client, op, path string) ([]T, error) {
	var out []T
	if err := c.do(ctx, op, http.MethodGet, path, nil, &out); err != nil {
		return nil, err
	}
	return out, nil
}

// statusError is the StatusError of a non-2xx response, with the server's
// message read from its (bounded) body.
func statusError(op string, resp *http.Response) *StatusError {
	data, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBytes))
	var er ErrorResponse
	msg := strings.TrimSpace(string(data))
	if json.Unmarshal(data, &er) == nil && er.Error != "" {
		msg = er.Error
	}
	return &StatusError{Op: op, Status: resp.StatusCode, Message: msg}
}

var _ error = (*StatusError)(nil)

// IsUnavailable reports whether err means the daemon could not be reached
// (no socket, nobody listening).
func IsUnavailable(err error) bool {
	var oe *net.OpError
	return errors.As(err, &oe) && oe.Op == "dial"
}

// SessionsFiltered lists the group's sessions that pass f (ListSessions
// without the members that did not answer).
func (c *Client) SessionsFiltered(ctx context.Context, f SessionFilter) ([]SessionInfo, error) {
	sl, err := c.ListSessions(ctx, f)
	return sl.Sessions, err
}

// ListSessions lists the group's sessions that pass f, with the members
// that did not answer (from UnansweredHeader; none from a hotdeskd that
// does not send it).
func (c *Client) ListSessions(ctx context.Context, f SessionFilter) (SessionList, error) {
	q := url.Values{}
	for k, v := range map[string]string{"user": f.User, "terminal": f.Terminal, "server": f.Server, "state": f.State, "token": f.Token} {
		if v != "" {
			q.Set(k, v)
		}
	}
	path := "/v1/sessions"
	if len(q) > 0 {
		path += "?" + q.Encode()
	}
	var sl SessionList
	h, err := c.doHeader(ctx, "sessions", http.MethodGet, path, nil, &sl.Sessions)
	if err != nil {
		return SessionList{}, err
	}
	sl.Unanswered = parseUnanswered(h)
	return sl, nil
}

// parseUnanswered reads UnansweredHeader: every line of it (a proxy may
// have split or joined them), items separated by commas, blanks around
// them dropped; an item that is not valid percent-encoding is kept as it
// came.
func parseUnanswered(h http.Header) []string {
	var ids []string
	for _, v := range h.Values(UnansweredHeader) {
		for _, item := range strings.Split(v, ",") {
			item = strings.TrimSpace(item)
			if item == "" {
				continue
			}
			if id, err := url.QueryUnescape(item); err == nil {
				item = id
			}
			ids = append(ids, item)
		}
	}
	return ids
}

// DisconnectSession suspends a session wherever it runs.
func (c *Client) DisconnectSession(ctx context.Context, id string) error {
	return c.do(ctx, "disconnect session", http.MethodPost, "/v1/sessions/"+url.PathEscape(id)+"/disconnect", nil, nil)
}

// LockSession locks a session wherever it runs.
func (c *Client) LockSession(ctx context.Context, id string) error {
	return c.do(ctx, "lock session", http.MethodPost, "/v1/sessions/"+url.PathEscape(id)+"/lock", nil, nil)
}

// Terminals lists the group's connected terminals.
func (c *Client) Terminals(ctx context.Context) ([]TerminalInfo, error) {
	return getList[TerminalInfo](ctx, c, "terminals", "/v1/terminals")
}

// Pairings lists pending pairing codes.
func (c *Client) Pairings(ctx context.Context) ([]PairingInfo, error) {
	return getList[PairingInfo](ctx, c, "pairings", "/v1/pairings")
}

// RevokePairing deletes a pending pairing code by its id.
func (c *Client) RevokePairing(ctx context.Context, id string) error {
	return c.do(ctx, "revoke pairing", http.MethodDelete, "/v1/pairings/"+url.PathEscape(id), nil, nil)
}

// Lockouts lists the login lockouts in force in the group.
func (c *Client) Lockouts(ctx context.Context) ([]LockoutInfo, error) {
	return getList[LockoutInfo](ctx, c, "lockouts", "/v1/lockouts")
}

// Failures lists the group's counts of failed logins.
func (c *Client) Failures(ctx context.Context) ([]FailureInfo, error) {
	return getList[FailureInfo](ctx, c, "failures", "/v1/failures")
}

// ClearLockout ends the lockout of key (as Lockouts lists it) and its
// failure count at every broker.
func (c *Client) ClearLockout(ctx context.Context, key string) error {
	return c.do(ctx, "clear lockout", http.MethodDelete, "/v1/lockouts/"+url.PathEscape(key), nil, nil)
}

// maxEventLine bounds one line of the event stream.
const maxEventLine = 64 << 10

// Events calls fn for the last n events and then, if follow, for every new
// one until ctx ends (nil) or the stream fails. The stream itself has no
// overall timeout; ctx bounds it.
func (c *Client) Events(ctx context.Context, n int, follow bool, fn func(event.Event) error) error {
	path := fmt.Sprintf("/v1/events?n=%d", n)
	if follow {
		path += "&follow=1"
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://hotdesk"+path, nil)
	if err != nil {
		return fmt.Errorf("adminapi: events: %w", err)
	}
	hc := *c.hc
	hc.Timeout = 0
	resp, err := hc.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("adminapi: events: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return statusError("events", resp)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 4096), maxEventLine)
	for sc.Scan() {
		var e event.Event
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			return fmt.Errorf("adminapi: events: %w", err)
		}
		if err := fn(e); err != nil {
			return err
		}
	}
	if err := sc.Err(); err != nil && ctx.Err() == nil {
		return fmt.Errorf("adminapi: events: %w", err)
	}
	if follow && ctx.Err() == nil {
		return ErrStreamEnded
	}
	return nil
}

// ErrStreamEnded means a followed event stream was ended by hotdeskd (it is
// stopping), not by the client.
var ErrStreamEnded = errors.New("adminapi: events: hotdeskd ended the stream (it is stopping)")
