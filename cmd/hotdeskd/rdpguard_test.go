package main

import (
	"strings"
	"testing"

	"github.com/hotdesk/hotdesk/cmd/hotdeskd/config"
	"github.com/hotdesk/hotdesk/internal/portguard"
	"github.com/hotdesk/hotdesk/internal/testutil"
)

// TestCheckRDPGuard: -check refuses backend rdp where nft is missing,
// naming the fix, and accepts it where nft is; other backends and the
// explicit opt-out need no nft.
func TestCheckRDPGuard(t *testing.T) {
	t.Parallel()
	parse := func(src string) *config.Config {
		t.Helper()
		c, err := config.Parse([]byte(src), "h.hcl")
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	rdp := parse("compositor {\n  backend = \"rdp\"\n}\n")
	_, err := checkRDPGuard(rdp, "/nonexistent/nft")
	if err == nil || !strings.Contains(err.Error(), "install the nftables package") {
		t.Fatalf("checkRDPGuard(rdp, no nft) = %v; want an error saying to install nftables", err)
	}
	for _, src := range []string{"", "compositor {\n  backend = \"rdp\"\n  insecure_unguarded_rdp = true\n}\n"} {
		if _, err := checkRDPGuard(parse(src), "/nonexistent/nft"); err != nil {
			t.Errorf("checkRDPGuard(%q, no nft) = %v; want nil", src, err)
		}
	}
	if _, err := portguard.LookNFT(""); err != nil {
		testutil.SkipOrFail(t, "nft: %v", err)
	}
	if _, err := checkRDPGuard(rdp, ""); err != nil {
		t.Fatalf("checkRDPGuard(rdp) with nft installed = %v; want nil", err)
	}
}
