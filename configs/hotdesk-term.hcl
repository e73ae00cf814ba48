# hotdesk-term configuration: the terminal agent of a thin client.
#
# Read by `hotdesk-term -config /etc/hotdesk/hotdesk-term.hcl agent`
# (configs/hotdesk-term.service). Every key is optional here, but the
# agent needs at least one broker address (servers or srv) and exactly one
# kind of trust anchor (pins or ca_file). A flag given on the command line
# wins over the same key in this file. Unknown keys are an error, reported
# as file:line:column. Durations use Go syntax: "500ms", "10s", "2m".

# Broker addresses (host:port), tried in this order. List two or more
# brokers of the group: the terminal connects to the first one that
# answers and is trusted, and fails over to the others. Each broker also
# tells the terminal, when it connects, which brokers its group has
# (PROTOCOL.md §11); those are tried after these. Flag: -server (repeat).
servers = ["broker1.example.com:4500", "broker2.example.com:4500"]

# A DNS SRV name listing the group's brokers (targets and ports, by
# priority), looked up on every reconnect, after `servers`. Flag: -srv.
# srv = "_hotdesk._tcp.example.com"

# Trust anchors: the SHA-256 fingerprints of broker certificates
# (`hotdeskd -fingerprint` prints a broker's). A broker is trusted if its
# certificate matches any of these, or any fingerprint the group published
# in the Welcome of a trusted broker (refreshed at every connection). One
# fingerprint of the group is enough to start; list every broker so that
# the terminal can start while any of them is down. Flag: -pin (repeat).
pins = [
  "sha256:0000000000000000000000000000000000000000000000000000000000000000",
]

# Instead of pins: verify broker certificates against these CA roots (PEM)
# and the broker's host name. Flag: -ca.
# ca_file = "/etc/hotdesk/ca.pem"

# The terminal's id, shown to administrators and bound into token
# challenges; stable across reboots. Default: the host name. Flag: -id.
# terminal_id = "desk-3-12"

# A human label: room and desk. Flag: -name.
name = "Room 3, desk 12"

# Software-token keystore (JSON, mode 0600). Default:
# $XDG_CONFIG_HOME/hotdesk/tokens.json. Flag: -keystore.
keystore = "/var/lib/hotdesk-term/tokens.json"

# Where the agent keeps what it learned: members.json, the group's members
# from the last Welcome (mode 0600), so that it can reach a member it
# learned when it boots while the configured servers are down. A file
# written under other pins or another CA is ignored. Default: the
# keystore's directory. Flag: -state-dir.
state_dir = "/var/lib/hotdesk-term"

# The display client started full-screen on every attach; {addr} becomes
# the loopback relay to the session (through the broker's attach gateway,
# with the single-use ticket). Flag: -display.
display = "xfreerdp /f /v:{addr} /cert:ignore /u:x /p:x /bpp:24 -grab-keyboard"

# Show the full-screen greeter ("insert your card", PIN and password
# prompts, messages) whenever no desktop is attached. Needs $DISPLAY (X11)
# or $WAYLAND_DISPLAY. Flag: -greeter.
greeter = true

# Print events on stdout as JSON lines (for scripts and logs) instead of
# text. Flag: -json.
json = false

# Log level on stderr (the journal): trace, debug, info, warn, error, off.
# PINs, passwords and keys are never logged. Flag: -log-level.
log_level = "info"

# Bound on each connection attempt (TCP, TLS and the protocol handshake).
# Flag: -timeout.
timeout = "10s"

# How often the terminal pings its broker; 3 unanswered pings mean the
# broker is gone and the terminal fails over. The default for `agent`,
# 500ms, notices a broker that vanished without closing the connection
# within about 2 s (a killed broker's connection closes at once). Flag:
# -keepalive.
keepalive = "500ms"

# Reconnect delays: the first wait after a failed round over all brokers,
# doubling (with ±20% jitter) up to the longest; while every broker refuses
# the connection (hotdeskd restarting, or waiting for etcd), at most 1s.
# Flags: -min-backoff, -max-backoff.
min_backoff = "500ms"
max_backoff = "30s"

# Card readers through pcscd (smart cards, NFC badges, phones). The block
# enables them (flag: -pcsc).
pcsc {
  # Only readers whose name contains one of these (default: all).
  # Flag: -readers (comma-separated).
  readers = []
  # A card must stay away this long before its removal is reported, so a
  # card that slips in the reader does not suspend the desktop.
  # Flag: -remove-grace.
  remove_grace = "1s"
}
