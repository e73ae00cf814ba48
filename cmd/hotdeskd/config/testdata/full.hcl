# Every setting with a non-default value.
server_id    = "broker-7"
data_dir     = "/srv/hotdesk"
listen       = "10.0.0.7:4600"
advertise    = "broker-7.example.org:4600"
admin_socket = "/run/hd/admin.sock"
admin_group  = "hotdesk-admin"
metrics_listen = "127.0.0.1:9555"
event_hook = "/usr/local/lib/hotdesk/on-event"
event_hook_timeout = "5s"

dashboard {
  listen         = "0.0.0.0:4443"
  readonly_group = "helpdesk"
  pam_service    = "hd-admin"
  session_ttl    = "1h"
}
log_level    = "debug"
log_json     = true

tls {
  cert_file = "/etc/hotdesk/tls/broker.crt"
  key_file  = "/etc/hotdesk/tls/broker.key"
}

etcd {
  endpoints    = ["https://etcd-1:2379", "https://etcd-2:2379", "etcd-3:2379"]
  lease_ttl    = "3s"
  dial_timeout = "1500ms"
  prefix       = "/hd/prod/"
  ca_file      = "/etc/hotdesk/etcd/ca.crt"
  cert_file    = "/etc/hotdesk/etcd/client.crt"
  key_file     = "/etc/hotdesk/etcd/client.key"

  embedded {
    client_url = "http://127.0.0.1:12379"
    peer_url   = "http://127.0.0.1:12380"
  }
}

session {
  suspend_timeout = "8h30m"
  reconnect_grace = "2m"
  auth            = "kiosk"
  kiosk_user      = "guest"
  max_sessions    = 50
  weight          = 3
}

compositor {
  type          = "weston"
  binary        = "/opt/weston/bin/weston"
  backend       = "rdp"
  args          = ["--idle-time=0", "--width=1920"]
  state_dir     = "/srv/hotdesk/state"
  start_timeout = "20s"
  stop_grace    = "0s"
}

pairing {
  code_ttl       = "2m"
  max_failures   = 3
  failure_window = "1h"
  lockout        = "30m"
}

auth {
  pam_service           = "hd-login"
  pin_service           = "hd-pin"
  pam_dir               = "/etc/hotdesk/pam.d"
  open_session          = false
  timeout               = "45s"
  reauth_on_hotdesk     = false
  self_register         = true
  max_sessions_per_user = 2
  max_failures          = 4
  failure_window        = "10m"
  lockout               = "1m"
  max_lockout           = "1h"

  policy {
    groups = ["staff"]
    auth   = "card+pin"
  }
  policy {
    users             = ["alice", "bob"]
    tokens            = ["uid.04a1b2c3"]
    auth              = "card+password"
    service           = "hd-strict"
    reauth_on_hotdesk = true
    max_sessions      = 1
  }
}
