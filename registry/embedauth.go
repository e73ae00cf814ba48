package registry

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"go.etcd.io/etcd/api/v3/authpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// Authorization of an embedded member (EmbedConfig.TLSDir set).
//
// Client certificates keep every other local user out; etcd's own
// authentication and RBAC also bound what the daemon's certificate may do:
// with auth enabled and --client-cert-auth, etcd takes the client
// certificate's common name as the user name, so the certificate of CN
// EmbeddedClientUser ("hotdeskd") acts as the etcd user of that name, whose
// only role (EmbeddedRole) reads and writes the registry's key prefix and
// nothing else: no other key, no user, role or cluster administration. Any
// other certificate the CA signed (the member's own server certificate, CN
// "hotdesk embedded etcd") names no user and is refused.
//
// EnableEmbeddedAuth provisions this once, at the first start, through the
// daemon's own client while auth is still off: the role, the user, and the
// "root" user etcd requires before auth can be enabled, with a random
// password written to <TLSDir>/root.password (0600: the owner's recovery
// key, e.g. `etcdctl --user root:…` to grant a changed prefix). Later starts
// find auth enabled and only make sure, as root, that the role covers the
// configured prefix (granting it if the prefix changed).

// EmbeddedClientUser is the etcd user the embedded member's client
// certificate names (its common name).
const EmbeddedClientUser = "hotdeskd"

// EmbeddedRole is the etcd role of EmbeddedClientUser: read and write on the
// registry's prefix.
const EmbeddedRole = "hotdesk-registry"

// embedRootPasswordFile holds the etcd root user's password, in TLSDir.
const embedRootPasswordFile = "root.password"

// EmbedRootPasswordFile names the file holding the etcd root password of an
// embedded member whose EmbedConfig.TLSDir was dir.
func EmbedRootPasswordFile(dir string) string { return filepath.Join(dir, embedRootPasswordFile) }

// EnableEmbeddedAuth turns on etcd authentication on the member cli talks
// to, restricting EmbeddedClientUser to prefix (see above). cli must be
// authenticated by the member's client certificate (Embedded.ClientTLS);
// tlsDir is the member's EmbedConfig.TLSDir. It is idempotent: if auth is
// already enabled it returns nil and changes nothing (enabled reports
// whether this call enabled it), except that the role is granted prefix if
// it lacks it. A failure part-way leaves auth off and the next call
// completes the provisioning.
func EnableEmbeddedAuth(ctx context.Context, cli *clientv3.Client, tlsDir, prefix string) (enabled bool, err error) {
	if prefix == "" {
		return false, errors.New("registry: enable auth: empty prefix")
	}
	st, err := cli.AuthStatus(ctx)
	if err != nil {
		return false, fmt.Errorf("registry: enable auth: status: %w", err)
	}
	if st.Enabled {
		return false, ensurePrefixGrant(ctx, cli.Endpoints(), tlsDir, prefix)
	}
	pwFile := EmbedRootPasswordFile(tlsDir)
	pw, err := os.ReadFile(pwFile)
	if errors.Is(err, os.ErrNotExist) {
		b := make([]byte, 24)
		if _, err := rand.Read(b); err != nil {
			return false, fmt.Errorf("registry: enable auth: %w", err)
		}
		pw = []byte(base64.RawURLEncoding.EncodeToString(b))
		tmp := pwFile + ".tmp"
		if err := os.WriteFile(tmp, pw, 0o600); err != nil {
			return false, fmt.Errorf("registry: enable auth: %w", err)
		}
		if err := os.Rename(tmp, pwFile); err != nil {
			return false, fmt.Errorf("registry: enable auth: %w", err)
		}
	} else if err != nil {
		return false, fmt.Errorf("registry: enable auth: %w", err)
	}
	grant := grantPrefix(cli, prefix)
	exists := func(err error) bool {
		return errors.Is(err, rpctypes.ErrUserAlreadyExist) || errors.Is(err, rpctypes.ErrRoleAlreadyExist)
	}
	steps := []struct {
		what string
		do   func() error
	}{
		{"add user root", func() error {
			_, err := cli.UserAdd(ctx, "root", string(pw))
			return err
		}},
		{"grant root", func() error { _, err := cli.UserGrantRole(ctx, "root", "root"); return err }},
		{"add role " + EmbeddedRole, func() error { _, err := cli.RoleAdd(ctx, EmbeddedRole); return err }},
		{"grant the prefix", func() error { return grant(ctx) }},
		{"add user " + EmbeddedClientUser, func() error {
			// No password: only the certificate authenticates it.
			_, err := cli.UserAddWithOptions(ctx, EmbeddedClientUser, "", &clientv3.UserAddOptions{NoPassword: true})
			return err
		}},
		{"grant " + EmbeddedClientUser, func() error {
			_, err := cli.UserGrantRole(ctx, EmbeddedClientUser, EmbeddedRole)
			return err
		}},
		{"enable auth", func() error { _, err := cli.AuthEnable(ctx); return err }},
	}
	for _, s := range steps {
		if err := s.do(); err != nil && !exists(err) {
			return false, fmt.Errorf("registry: enable auth: %s: %w", s.what, err)
		}
	}
	return true, nil
}

// grantPrefix returns what grants EmbeddedRole read and write on prefix.
func grantPrefix(cli *clientv3.Client, prefix string) func(context.Context) error {
	return func(ctx context.Context) error {
		_, err := cli.RoleGrantPermission(ctx, EmbeddedRole, prefix, clientv3.GetPrefixRangeEnd(prefix),
			clientv3.PermissionType(clientv3.PermReadWrite))
		return err
	}
}

// ensurePrefixGrant checks, as etcd's root user (its password from tlsDir),
// that EmbeddedRole still covers prefix, and grants it if not (the
// configured prefix changed since auth was enabled). Without the password
// file it changes nothing.
func ensurePrefixGrant(ctx context.Context, endpoints []string, tlsDir, prefix string) error {
	pw, err := os.ReadFile(EmbedRootPasswordFile(tlsDir))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("registry: enable auth: %w", err)
	}
	tc, err := ClientTLSFromFiles(EmbedTLSFiles(tlsDir))
	if err != nil {
		return fmt.Errorf("registry: enable auth: %w", err)
	}
	root, err := clientv3.New(clientv3.Config{Endpoints: endpoints, TLS: tc, Username: "root", Password: string(pw),
		DialTimeout: 10 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		return fmt.Errorf("registry: enable auth: root client: %w", err)
	}
	defer root.Close()
	role, err := root.RoleGet(ctx, EmbeddedRole)
	if err != nil {
		return fmt.Errorf("registry: enable auth: role %s: %w", EmbeddedRole, err)
	}
	end := clientv3.GetPrefixRangeEnd(prefix)
	for _, p := range role.Perm {
		if string(p.Key) == prefix && string(p.RangeEnd) == end && p.PermType == authpb.READWRITE {
			return nil
		}
	}
	if err := grantPrefix(root, prefix)(ctx); err != nil {
		return fmt.Errorf("registry: enable auth: grant %s: %w", prefix, err)
	}
	return nil
}
