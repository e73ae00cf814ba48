# Blocks given with some attributes keep the defaults of the others.
data_dir = "/data"
listen   = "127.0.0.1:0"

etcd {
  lease_ttl = "10s"
}

session {
  max_sessions = 10
}
