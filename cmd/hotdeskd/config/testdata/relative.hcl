# Relative paths resolve against this file's directory; a bare binary
# name is left for $PATH.
data_dir     = "state"
admin_socket = "run/admin.sock"
listen       = "[::]:4500"

tls {
  cert_file = "tls/a.crt"
  key_file  = "../keys/a.key"
}

compositor {
  binary = "bin/weston"
}
