# hotdesk.hcl: configuration of hotdeskd, the hotdesk session broker.
#
# Install as /etc/hotdesk/hotdesk.hcl. Every setting is shown with its
# default; a file with only the lines you change works the same. Unknown
# settings are an error. Durations are Go durations: "500ms", "10s", "24h".
# Relative paths are resolved against the directory of this file.
# SIGHUP (systemctl reload hotdeskd) re-reads the file: log_level, the
# login policies (session.auth and kiosk_user; auth's pam_service,
# pin_service, reauth_on_hotdesk, self_register, max_sessions_per_user and
# its policy blocks) and session.suspend_timeout apply at once (the
# policies to every login decided from then on, the timeout to every
# suspended desktop, from its suspension);
# other changes on the next restart (which keeps the desktops), and the log
# names them. A file with an error is reported and the running
# configuration is kept. Only root (or hotdeskd's user) may be able to
# change this file and the directories above it: hotdeskd refuses it
# otherwise.

# Name of this server in the server group; unique per group.
# Letters, digits, ".", "_" and "-". Default: the hostname.
# server_id = "broker-1"

# Where hotdeskd keeps its state: the TLS key pair, the embedded etcd
# member (<data_dir>/etcd), session state (<data_dir>/sessions), and with
# the embedded etcd 128 MiB of room set aside for it (<data_dir>/reserve,
# given back when the disk fills).
data_dir = "/var/lib/hotdesk"

# Terminal listener (TLS), host:port. "0.0.0.0" or "[::]" listens on every
# address.
listen = "0.0.0.0:4500"

# Address other brokers and the terminals use to reach this server.
# Default: listen, with an unspecified host replaced by the hostname.
# advertise = "broker-1.example.org:4500"

# Attach gateway (TLS): terminals reach the desktops only through it, with
# the single-use ticket of their Attached message. Default: listen's host on
# a free port (announced to terminals in Attached).
# attach_listen = "0.0.0.0:4503"

# Local admin API (hotdeskctl) socket.
admin_socket = "/run/hotdesk/admin.sock"

# Members of this unix group may use the admin socket, besides root and
# the daemon's own user. "" = nobody else.
admin_group = ""

# Prometheus /metrics, /livez and /readyz over plain HTTP. Keep it on
# loopback (or a management network); "off" disables it. If the default
# port is taken the daemon starts without it and logs why.
metrics_listen = "127.0.0.1:9450"

# An executable run for every event of this broker (session attached,
# suspended, token inserted, login refused, ..., this broker's own
# server_left at a stop; not other brokers' events) with the event as one JSON object and a
# newline on stdin and its kind as the first argument, like Sun Ray's
# utaction. It runs as hotdeskd's user, one at a time, in event order; at
# event_hook_timeout its process group (it and its children) is killed. A
# non-zero exit or a timeout is logged with its output and not retried.
# Up to 256 events wait; events arriving while 256 wait are skipped.
# The contract: proto/ADMIN.md section 2.
# event_hook = "/usr/local/lib/hotdesk/on-event"
# event_hook_timeout = "10s"

# trace | debug | info | warn | error
log_level = "info"

# Log one JSON object per line instead of text.
log_json = false

tls {
  # Certificate and key of the terminal listener; generated on first start
  # when missing. Default: <data_dir>/tls/server.crt and server.key.
  # cert_file = "/var/lib/hotdesk/tls/server.crt"
  # key_file  = "/var/lib/hotdesk/tls/server.key"
}

etcd {
  # Client endpoints of a real etcd cluster shared by the server group, e.g.
  # ["https://etcd-1:2379", "https://etcd-2:2379", "https://etcd-3:2379"].
  # None: hotdeskd runs an embedded single etcd member in <data_dir>/etcd
  # (a single-server install).
  endpoints = []

  # TTL of this server's lease. After the server dies, its tokens work at
  # another server of the group once the lease expires: between 2/3 of the
  # TTL and the TTL, plus up to 0.5 s. A restart within that time keeps
  # every desktop. At least "1s"; etcd raises a TTL below 1.5 election
  # timeouts (2 s with etcd's default 1 s), so "1s" (failover within 2 s)
  # needs etcd run with --election-timeout=500 --heartbeat-interval=100.
  # Short leases also fence a server whose renewals stall (a loaded or
  # swapping machine) sooner.
  lease_ttl = "5s"

  # Timeout to connect to the cluster.
  dial_timeout = "5s"

  # Key prefix of every hotdesk key; starts and ends with "/".
  prefix = "/hotdesk/"

  # mTLS for a real cluster (with endpoints only); cert_file and key_file
  # go together. hotdeskd -check warns loudly about a plaintext (http://)
  # endpoint or a missing client certificate: whoever can write the
  # registry can give themselves anyone's session.
  ca_file   = ""
  cert_file = ""
  key_file  = ""

  # The embedded member (used when endpoints is empty): loopback addresses
  # only (anything else is refused). It always requires TLS client
  # certificates from a private CA generated in <data_dir>/etcd-tls (0700)
  # on first start, on the client and the peer port (http:// here is
  # served as https://), so no other local user can read or write it.
  # Another broker of a group on this host uses endpoints = ["https://..."]
  # with ca_file, cert_file and key_file = <data_dir>/etcd-tls/ca.crt,
  # client.crt, client.key.
  embedded {
    client_url = "http://127.0.0.1:4501"
    peer_url   = "http://127.0.0.1:4502"
  }
}

session {
  # How long a session stays suspended (token removed) before it is
  # destroyed.
  suspend_timeout = "24h"

  # A terminal whose connection is lost while it shows a session (its link
  # dropped) and that comes back within this, with the same terminal id and
  # the session's resume key (a secret of its last connection), resumes the
  # session with the token alone: no PIN or password again for a blip,
  # whatever reauth_on_hotdesk says (the account is checked; a session an
  # administrator locked, and a password login without a card, are asked
  # as usual). "0s": never.
  reconnect_grace = "30s"

  # Default login policy (see the auth block for per-token, per-user and
  # per-group policies), and what each exposes:
  #   kiosk          no login: every token, registered or not, gets a desktop
  #                  (Sun Ray kiosk mode). Exposes a desktop to anyone who
  #                  can present any token id; use only for public kiosks.
  #   card           the registered card alone, no prompt. Card UIDs and
  #                  PIV CHUIDs can be copied: a copied UID is the session.
  #                  Every login and hot-desk still asks the account stack
  #                  of auth.pam_service (pam_acct_mgmt): an expired, locked
  #                  or directory-disabled account, /etc/nologin or
  #                  access.conf stops the card.
  #   card+pin       the card plus a PIN (PAM service auth.pin_service).
  #   card+password  the card plus the user's password (auth.pam_service).
  #   password       user name and password without a card; the user name
  #                  locates the session (token "user.<name>").
  # The default asks for a PIN: nothing is exposed without a registered
  # token and a secret.
  auth = "card+pin"

  # Kiosk mode: the user a kiosk session belongs to. "" = the user the
  # token is registered to (or "kiosk" for unregistered tokens). The
  # desktop runs as that local account if it is a regular user (uid >=
  # 1000), else as a pooled kiosk account (compositor.kiosk_account_prefix).
  kiosk_user = ""

  # Most sessions this server hosts (each is a desktop with its
  # processes); 0 = unlimited (-check warns). Enforced when the desktop
  # starts, so concurrent logins never overshoot it.
  max_sessions = 50

  # This server's share of new sessions in a group: a new session goes to
  # the member with the fewest sessions per unit of weight, so a server of
  # weight 2 takes twice as many as one of weight 1 (1 to 1000).
  weight = 1

  # Leave the desktops running when hotdeskd stops; the next start re-adopts
  # them (verifying each is the process it started) and re-claims their
  # tokens, so a restart or an upgrade loses no session. false: a stop ends
  # every session.
  keep_on_stop = true
}

auth {
  # PAM services (stacks) for passwords and for PINs; a file per service in
  # pam_dir ("" = the system's /etc/pam.d). configs/pam.d/hotdesk is one.
  # libpam reads `@include` files from /etc/pam.d whatever pam_dir says:
  # a stack in pam_dir that includes common-auth gets the system's.
  # A login that asks no secret (the card policy; a hot-desk with
  # reauth_on_hotdesk = false) runs the account stack of its policy's
  # service alone (pam_service for card): off-boarding by expiring, locking
  # or disabling the account stops the card too. A positive answer is
  # reused for at most 60 s for the same service, user, terminal and address.
  pam_service = "hotdesk"
  pin_service = "hotdesk-pin"
  pam_dir     = ""

  # Open a PAM session (and establish credentials) for every desktop, closed
  # when the desktop is destroyed.
  open_session = true

  # Longest a login may take, prompts included, and the person's answer to
  # one prompt (a PIN, a password): past it the login is refused ("no
  # answer in time") and the terminal shows its greeter again.
  timeout        = "2m"
  prompt_timeout = "1m"

  # Ask again when a token resumes or takes over a session (hot-desking).
  # false: the hot-desk asks nothing, but the account stack of the
  # policy's service is still consulted.
  reauth_on_hotdesk = true

  # Let an unknown card enroll itself on first use: the person logs in with
  # user name and password and the card is registered to them.
  self_register = false

  # Most sessions one user may hold in the group; 0 = unlimited. Decided in
  # the etcd transaction that claims the session, so brokers admitting one
  # user at the same moment never exceed it together.
  max_sessions_per_user = 0

  # Failed logins per token, user and terminal within failure_window
  # before a lockout; lockouts start at `lockout` and double up to
  # `max_lockout`. Failures are counted for the whole group (in the
  # registry: max_failures in all, wherever they happen; a success clears
  # the count) and a lockout holds at every broker. Give every broker the
  # same values (`hotdeskctl server list` names a broker whose differ). While the registry is out of reach a broker counts its
  # own failures only. An administrator's clearing (hotdeskctl lockout
  # clear) stays in the registry for max_lockout: a lockout started before
  # it, published late by a broker that was cut off, is refused.
  max_failures   = 5
  failure_window = "15m"
  lockout        = "30s"
  max_lockout    = "15m"

  # Per-token, per-user and per-group policies, first match by token, then
  # user, then group (in file order), else session.auth:
  # policy {
  #   groups = ["staff"]
  #   auth   = "card+pin"
  # }
  # policy {
  #   users             = ["alice"]
  #   tokens            = ["uid.04a1b2c3"]
  #   auth              = "card+password"
  #   service           = "hotdesk"   # PAM service for this policy
  #   reauth_on_hotdesk = false
  #   max_sessions      = 1
  # }
}

# Card readers attached to this host (a kiosk or a console): each seat is
# watched by a local terminal agent ("seat-<name>", the hotdesk-term binary
# named by seat_agent; default: next to hotdeskd, else in $PATH).
# seat_agent = "/usr/local/bin/hotdesk-term"
# seat "console" {
#   readers      = ["Virtual PCD 00 00"]   # reader name filters; none = all
#   remove_grace = "1s"
# }

compositor {
  # Compositor implementation: "weston", or "wayray" for a compositor that
  # speaks hotdesk's control protocol (proto/COMPOSITOR.md; binary and args
  # are its command line). A "wayray" compositor runs as hotdeskd's user:
  # backend, run_as_user, the kiosk accounts and insecure_unguarded_rdp
  # apply to weston only, and hotdeskd as root refuses to start unless
  # insecure_allow_root = true (run hotdeskd as an unprivileged user).
  type = "weston"

  # Compositor binary: a name looked up in $PATH, or a path.
  binary = "weston"

  # headless (local display clients) | rdp (served over RDP on loopback)
  backend = "headless"

  # Extra arguments for every compositor. Without -c/--config here, each
  # weston gets a weston.ini of its session (weston's defaults without the
  # on-screen keyboard, weston-keyboard); with it, that file is used as it
  # is (add "[input-method]" and "path=" to it to keep the keyboard off).
  args = []

  # Per-session state (sockets, pid files) so that a restarted hotdeskd
  # adopts the running sessions. Default: <data_dir>/sessions.
  # state_dir = "/var/lib/hotdesk/sessions"

  # How long a compositor may take to become ready.
  start_timeout = "10s"

  # How long a compositor gets to exit after SIGTERM before SIGKILL.
  stop_grace = "5s"

  # Start each desktop as its user (uid, gid, supplementary groups, a
  # private XDG_RUNTIME_DIR owned by the user) when that is a regular local
  # account (uid >= 1000); kiosk sessions, root, system accounts and users
  # unknown to this host run as a pooled unprivileged account
  # (<kiosk_account_prefix>1..N, created with useradd on first use, a fresh
  # home per session, every leftover process killed, its entries in /tmp,
  # /var/tmp and /dev/shm and its System V IPC objects removed when the
  # session ends). No desktop ever runs as uid 0 or as hotdeskd's user. The
  # parents of state_dir are made searchable (o+x) so desktops reach their
  # own session directory. false: as hotdeskd's user, refused when that is
  # root.
  run_as_user = true
  kiosk_account_prefix = "hdkiosk"
  kiosk_accounts       = 256

  # The tasks (processes and threads) the user of a desktop may have in
  # all (RLIMIT_NPROC, set on each desktop run as its user): every desktop
  # is in hotdeskd's service, and without a bound one user's fork bomb
  # takes all of its tasks. 0: no limit. The other limits of a desktop
  # (and this one, if lower) are what its PAM session sets (pam_limits:
  # /etc/security/limits.conf), with auth.open_session.
  max_user_tasks = 4096

  # Tests with fake compositors only: with run_as_user = false, let
  # desktops run as root. -check warns.
  insecure_allow_root = false

  # backend = "rdp": each desktop is served on a loopback RDP port, and
  # weston asks an RDP client for no password. hotdeskd therefore lets
  # only its own uid connect to those ports (an nftables table
  # hotdesk_<id> per state_dir, logged at start; needs the nftables
  # package and hotdeskd running as root); every other local user's
  # connection is refused. Without the guard no RDP desktop starts.
  # true serves them unguarded: any local user can use any desktop.
  # Single-user hosts only; -check warns.
  insecure_unguarded_rdp = false
}

pairing {
  # How long a pairing code (hotdeskctl token pair) stays valid.
  code_ttl = "10m"

  # After max_failures wrong codes within failure_window, pairing from
  # that source (its address; an IPv6 /64 counts as one) is refused for
  # lockout.
  max_failures   = 5
  failure_window = "15m"
  lockout        = "15m"
}

# What a client may hold of the daemon. Every limit logs when it bites.
limits {
  # Connections per listener (terminal listener and attach gateway), in
  # all and per source IP address; beyond, new connections are closed at
  # once. Each terminal holds one to the terminal listener and one to the
  # gateway while it shows a desktop: terminals behind a NAT share its
  # address, so raise max_connections_per_source above their number.
  max_connections            = 1024
  max_connections_per_source = 64

  # Connections still in the TLS handshake or before their first message:
  # in all, and per source address (an IPv6 /64 counts as one), so that a
  # few addresses cannot hold them all; and how long they may take for both.
  # At either cap in all, a newcomer from a source holding at least two
  # fewer of them than another source closes that source's oldest instead
  # of being refused.
  max_unauthenticated            = 128
  max_unauthenticated_per_source = 16
  handshake_timeout              = "10s"

  # Logins waiting in PAM (prompts included): in all, per source address
  # (an IPv6 /64 counts as one: raise the per-source bound if many
  # terminals of one IPv6 network may wait at a prompt at once), per user
  # and per terminal. A login over a limit is refused with
  # rate_limited; slow or silent clients cannot hold every PAM helper.
  max_pending_logins              = 64
  max_pending_logins_per_source   = 8
  max_pending_logins_per_user     = 2
  max_pending_logins_per_terminal = 1

  # Outstanding attach tickets per session; a new one revokes the oldest,
  # so re-presenting a token never fills the gateway's table.
  max_tickets_per_session = 4
  # Token insertions and pairings one terminal connection may send per
  # second, in bursts of twice as many; beyond, each is answered
  # rate_limited (the connection stays open); as many CardError reports
  # (beyond, dropped). A person presents a few a second at most; a
  # terminal retrying several tokens, a few more.
  token_events_per_second = 50
}

# Web admin dashboard over HTTPS: servers, sessions (kill, disconnect,
# lock), terminals, tokens (pairing codes with QR, registration, disable)
# and live events. Off unless listen is set. Logins are checked by PAM
# (pam_service) and then by group: members of admin_group (above, required)
# may act, members of readonly_group may only look.
# dashboard {
#   listen         = "0.0.0.0:4443"
#   cert_file      = ""               # default: the broker's certificate (tls block)
#   key_file       = ""
#   readonly_group = "helpdesk"
#   pam_service    = "hotdesk-admin"
#   session_ttl    = "8h"
# }
