# The configuration a f477c10 hotdeskd ran with when it wrote server-record.json
# (its server record, read from its embedded etcd; paths renamed, nothing else).
# TestPreviousReleaseSettings compares this release's group settings of it with that record.
server_id    = "b1"
data_dir     = "/var/lib/hotdesk-test/data"
listen       = "127.0.0.1:38043"
admin_socket = "/var/lib/hotdesk-test/admin.sock"
metrics_listen = "127.0.0.1:33529"
etcd {
  lease_ttl = "7s"
  embedded {
    client_url = "https://127.0.0.1:34323"
    peer_url   = "https://127.0.0.1:56949"
  }
}
session {
  suspend_timeout = "8h"
  auth            = "card+pin"
  kiosk_user      = "kiosk"
  keep_on_stop    = true
}
auth {
  pam_dir               = "/var/lib/hotdesk-test/pam.d"
  open_session          = false
  reauth_on_hotdesk     = false
  self_register         = true
  max_sessions_per_user = 2
  max_failures          = 7
  failure_window        = "20m"
  lockout               = "1m"
  max_lockout           = "2h"
  policy {
    tokens = ["uid.04a1b2c3d4", "soft.abcdefghijklmnopqrstuvwxyz234567"]
    auth   = "card"
  }
  policy {
    users             = ["carol", "alice"]
    auth              = "password"
    reauth_on_hotdesk = true
    max_sessions      = 1
  }
  policy {
    groups  = ["staff", "admins"]
    auth    = "card+password"
    service = "hotdesk"
  }
}
