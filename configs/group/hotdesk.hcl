# hotdesk.hcl for one broker of a server group: every broker of the group
# points at the same etcd cluster, over mutual TLS. Copy it to
# /etc/hotdesk/hotdesk.hcl on each broker and change server_id and
# advertise; everything not set here keeps its default (configs/hotdesk.hcl,
# hotdesk.hcl(5)). The settings every broker must share (lease_ttl, the
# login policies, lockout limits…) are compared across the group:
# `hotdeskctl server list` names a broker whose values differ.
#
# The etcd cluster's CA signs a client certificate per broker (CN = the
# server_id is a good habit). Key files must be readable by hotdeskd only
# (root, mode 0600). `hotdeskd -check -config /etc/hotdesk/hotdesk.hcl`
# checks the file before a restart: the files exist, the CA file holds a
# certificate and the key matches the certificate.
#
# Certificates, if the cluster has no CA yet (openssl; on the machine that
# keeps ca.key, which no broker needs). The CA:
#
#   openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
#     -days 3650 -subj /CN=hotdesk-etcd-ca -keyout ca.key -out ca.crt
#
# one certificate per name: each etcd member (its client and peer
# certificate, with the member's DNS name and address), each broker (CN =
# its etcd user, below) and the etcd administrator (CN root):
#
#   sign() { # NAME EXTENDED-KEY-USAGE SUBJECT-ALT-NAMES
#     openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
#       -subj "/CN=$1" -keyout "$1.key" -out "$1.csr"
#     printf 'extendedKeyUsage=%s\nsubjectAltName=%s\n' "$2" "$3" > "$1.ext"
#     openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial \
#       -days 825 -extfile "$1.ext" -out "$1.crt"
#     chmod 600 "$1.key"
#   }
#   sign etcd-1 serverAuth,clientAuth DNS:etcd-1.example.org,IP:192.0.2.11
#   sign broker-1 clientAuth DNS:broker-1.example.org
#   sign root clientAuth DNS:root
#
# Copy ca.crt, broker-1.crt and broker-1.key to /etc/hotdesk/etcd/ on
# broker-1 (owner root, the key 0600). Each etcd member runs with its own
# certificate for clients and peers and takes only clients the CA signed:
#
#   etcd --name etcd-1 ... --client-cert-auth --trusted-ca-file ca.crt \
#     --cert-file etcd-1.crt --key-file etcd-1.key \
#     --peer-client-cert-auth --peer-trusted-ca-file ca.crt \
#     --peer-cert-file etcd-1.crt --peer-key-file etcd-1.key \
#     --auto-compaction-mode=periodic --auto-compaction-retention=1h
#
# The compaction is not optional: etcd keeps every revision until it
# compacts, and a group writes steadily even when nobody hot-desks (each
# terminal's record every 10 s), so without it the database grows until
# its quota (2 GiB) and etcd then refuses every write: no login, no
# hot-desk. A broker that finds the history kept for a day (or a million
# revisions) says so in its log; hotdesk_registry_history_revisions counts.
#
# Backups: etcdctl snapshot save. A restore (etcdutl snapshot restore, a
# new data directory on every member) takes the group back to the
# snapshot; the running brokers notice and re-claim their sessions by
# themselves (README, "Restoring etcd from a snapshot"). Restore without
# --bump-revision, or restart every hotdeskd after a restore with it; then
# redo the token changes and pairing codes made since the snapshot.
#
# etcd authorization (once per cluster, by its administrator). mTLS says
# who may connect; etcd's RBAC bounds what a broker's certificate may do, as
# the embedded etcd of a single server does by itself. With etcd started
# with --client-cert-auth (and --trusted-ca-file, as above) and auth
# enabled, etcd takes a client certificate's CN as the user name: give each
# broker's CN a password-less user whose one role reads and writes the
# group's prefix (etcd.prefix below) and nothing else (etcdctl with
# --endpoints, --cacert ca.crt, --cert root.crt and --key root.key):
#
#   etcdctl user add root                        # the administrator; keep its password safe
#   etcdctl user grant-role root root
#   etcdctl role add hotdesk
#   etcdctl role grant-permission hotdesk --prefix=true readwrite /hotdesk/
#   etcdctl user add broker-1 --no-password      # one per broker: its certificate's CN
#   etcdctl user grant-role broker-1 hotdesk
#   etcdctl auth enable
#
# (Once auth is on, the certificate with CN root is the administrator;
# another certificate needs --user root.) A broker needs nothing else:
# leases, watches and transactions on its prefix; no cluster, member, user
# or compaction rights. A certificate whose CN has no user is refused, and
# a broker cannot read or write another group's prefix on a shared
# cluster. A new broker: add its user and grant the role before starting
# it.

# Unique in the group.
server_id = "broker-1"

# Terminals and the other brokers reach this server here; redirects name it.
listen    = "0.0.0.0:4500"
advertise = "broker-1.example.org:4500"

# The attach gateway carries the desktops to the terminals: by default a
# free port on listen's host, announced with advertise's host. Terminals
# must reach it as well as listen: behind a firewall, fix its port.
# attach_listen = "0.0.0.0:4503"

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

  # A dead broker's tokens work at another broker once its lease expires:
  # between 2/3 of this and this, plus up to 0.5 s; the same on every
  # broker. "1s" (failover within 2 s) needs etcd run with
  # --election-timeout=500 --heartbeat-interval=100 (etcd raises a shorter
  # TTL to 1.5 election timeouts), and fences a stalled broker sooner.
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
