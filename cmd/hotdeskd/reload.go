package main

import (
	"context"
	"reflect"
	"strings"
	"time"
	"unicode"

	"github.com/hashicorp/go-hclog"

	"github.com/hotdesk/hotdesk/cmd/hotdeskd/config"
)

// reload re-reads the configuration on SIGHUP; a bad file is reported and
// the running configuration kept. cur is the configuration in effect: it
// takes what the reload applies. The log level applies at once, and so,
// through apply, the login policies and the suspend timeout (setLive's
// settings: each login decided from then on is decided by the new
// policies, a login waiting at a prompt ends under the one it started
// with; every suspended session ends the new timeout after its
// suspension); apply refuses policies it cannot build (the running ones
// stay). Every other changed setting is named in a warning: it takes
// effect at the next restart (which keeps the desktops).
func reload(logger hclog.InterceptLogger, path string, cur *config.Config, apply func(*config.Config) error) {
	if path == "" {
		logger.Info("reload: running on defaults, nothing to reload")
		return
	}
	next, err := readConfig(path)
	if err != nil {
		logger.Error("reload: keeping the running configuration", "error", err)
		return
	}
	if next.LogLevel != cur.LogLevel {
		logger.SetLevel(hclog.LevelFromString(next.LogLevel))
		cur.LogLevel = next.LogLevel
	}
	live := *cur
	setLive(&live, next)
	if changed := restartNeeded(cur, &live); len(changed) > 0 {
		if err := apply(&live); err != nil {
			logger.Error("reload: keeping the running login policies and suspend timeout", "error", err)
		} else {
			*cur = live
			logger.Info("reload: applied at once", "settings", strings.Join(changed, ", "))
		}
	}
	if changed := restartNeeded(cur, next); len(changed) > 0 {
		logger.Warn("reload: changed settings take effect only after a restart", "settings", strings.Join(changed, ", "))
	}
	logger.Info("configuration reloaded", "log_level", cur.LogLevel)
}

// applyReload makes cfg's login policies and suspend timeout the running
// ones, then publishes the group settings in effect in this server's
// record; a publication that fails is done again by the settings watch's
// next check.
func (d *daemon) applyReload(cfg *config.Config) error {
	if err := d.policies.Set(buildPolicies(cfg)); err != nil {
		return err
	}
	d.broker.SetSuspendTimeout(cfg.Session.SuspendTimeout)
	d.settings.setOurs(cfg.GroupSettings())
	ctx, cancel := context.WithTimeout(d.run, 5*time.Second)
	defer cancel()
	if err := d.publishSettings(ctx); err != nil {
		d.log.Warn("reload: the group settings not published in this server's record yet; tried again within 15 s", "error", err)
	}
	return nil
}

// setLive copies into dst the settings of src a reload applies at once:
// those the login policies are built of (buildPolicies: the default
// policy, session.auth and kiosk_user; the auth block's pam_service,
// pin_service, reauth_on_hotdesk, self_register and max_sessions_per_user,
// and its policy blocks), and session.suspend_timeout.
func setLive(dst, src *config.Config) {
	dst.Session.Auth, dst.Session.KioskUser = src.Session.Auth, src.Session.KioskUser
	dst.Session.SuspendTimeout = src.Session.SuspendTimeout
	d, s := &dst.Auth, &src.Auth
	d.PAMService, d.PINService = s.PAMService, s.PINService
	d.ReauthOnHotdesk, d.SelfRegister, d.MaxSessionsPerUser = s.ReauthOnHotdesk, s.SelfRegister, s.MaxSessionsPerUser
	d.Rules = s.Rules
}

// restartNeeded names the settings in which next differs from cur, but for
// the log level (a reload applies it at once): "session.suspend_timeout",
// or a whole block or list ("seat"). It compares values, not their printed
// form: pointers (a policy's *bool) are followed.
func restartNeeded(cur, next *config.Config) []string {
	a, b := *cur, *next
	a.LogLevel, b.LogLevel = "", ""
	out := changedFields(reflect.ValueOf(a), reflect.ValueOf(b), "", 2)
	for i, name := range out {
		if key, ok := keyOfField[name]; ok {
			out[i] = key
		}
	}
	return out
}

// keyOfField is the configuration's key of the fields whose name is not
// their key's (a list of blocks named in the plural).
var keyOfField = map[string]string{"auth.rules": "auth.policy", "seats": "seat"}

// changedFields lists the fields of structs a and b that differ, as
// snake_case paths below prefix, looking depth levels down.
func changedFields(a, b reflect.Value, prefix string, depth int) []string {
	var out []string
	for i := range a.NumField() {
		f := a.Type().Field(i)
		if !f.IsExported() {
			continue
		}
		x, y := a.Field(i), b.Field(i)
		if reflect.DeepEqual(x.Interface(), y.Interface()) {
			continue
		}
		name := prefix + snake(f.Name)
		if x.Kind() == reflect.Struct && depth > 1 && x.NumField() > 0 && f.Type.PkgPath() != "time" {
			if sub := changedFields(x, y, name+".", depth-1); len(sub) > 0 {
				out = append(out, sub...)
				continue
			}
		}
		out = append(out, name)
	}
	return out
}

// snake turns a Go field name into the config's key style: SuspendTimeout
// → suspend_timeout, PAMService → pam_service, ServerID → server_id.
func snake(s string) string {
	var b strings.Builder
	rs := []rune(s)
	for i, r := range rs {
		upper := unicode.IsUpper(r)
		if upper && i > 0 && (unicode.IsLower(rs[i-1]) || (i+1 < len(rs) && unicode.IsLower(rs[i+1]))) {
			b.WriteByte('_')
		}
		b.WriteRune(unicode.ToLower(r))
	}
	return b.String()
}
