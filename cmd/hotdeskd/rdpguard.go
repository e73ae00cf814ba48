package main

import (
	"fmt"
	"os"

	"github.com/hotdesk/hotdesk/cmd/hotdeskd/config"
	"github.com/hotdesk/hotdesk/internal/portguard"
)

// checkRDPGuard is -check's look at what compositor.backend = "rdp" needs
// here: weston authenticates no RDP client, so hotdeskd starts an RDP
// desktop only once its port is guarded (nftables, only hotdeskd's uid may
// connect). A missing nft binary is an error (every RDP desktop would be
// refused); a -check not run as root is a warning (hotdeskd needs root
// for the guard, which -check cannot see from here). nft is the nft
// binary ("" = portguard's default look-up).
func checkRDPGuard(cfg *config.Config, nft string) (warnings []string, err error) {
	c := cfg.Compositor
	if c.Type != "weston" || c.Backend != "rdp" || c.InsecureUnguardedRDP {
		return nil, nil
	}
	if _, err := portguard.LookNFT(nft); err != nil {
		return nil, fmt.Errorf("compositor.backend = \"rdp\" needs nftables to keep other local users off the desktops' RDP ports, and hotdeskd refuses RDP desktops without it: %w", err)
	}
	if os.Geteuid() != 0 {
		warnings = append(warnings, "compositor.backend = \"rdp\": hotdeskd must run as root to guard the desktops' RDP ports with nftables; without the guard it refuses RDP desktops")
	}
	return warnings, nil
}
