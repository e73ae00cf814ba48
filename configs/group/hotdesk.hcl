# hotdesk.hcl for one broker of a server group: every broker of the group
# points at the same etcd cluster, over mutual TLS. Copy it to
# /etc/hotdesk/hotdesk.hcl on each broker and change server_id and
# advertise; everything not set here keeps its default (configs/hotdesk.hcl,
# hotdesk.hcl(5)).
#
# The etcd cluster's CA signs a client certificate per broker (CN = the
# server_id is a good habit). Key files must be readable by hotdeskd only
# (root, mode 0600). `hotdeskd -check -config /etc/hotdesk/hotdesk.hcl`
# checks the file before a restart.

# Unique in the group.
server_id = "broker-1"

# Terminals and the other brokers reach this server here; redirects name it.
listen    = "0.0.0.0:4500"
advertise = "broker-1.example.org:4500"

# Members of this group may use hotdeskctl on this server.
admin_group = "hotdesk"

etcd {
  # Every member of the cluster; the client fails over between them.
  endpoints = [
    "https://etcd-1.example.org:2379",
    "https://etcd-2.example.org:2379",
    "https://etcd-3.example.org:2379",
  ]

  # mTLS: the cluster's CA, and this broker's client certificate and key.
  ca_file   = "/etc/hotdesk/etcd/ca.crt"
  cert_file = "/etc/hotdesk/etcd/broker-1.crt"
  key_file  = "/etc/hotdesk/etcd/broker-1.key"

  # A dead broker's sessions leave the registry after this (plus an etcd
  # election timeout); the same on every broker.
  lease_ttl = "5s"

  # The same prefix on every broker of one group; another prefix is another
  # group on the same cluster.
  prefix = "/hotdesk/"
}

session {
  # Card and PIN at every terminal of the group.
  auth = "card+pin"
}

compositor {
  # Desktops run as their users.
  run_as_user = true
}
