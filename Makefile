# hotdesk — build, demo, test, package.
#
#   make demo   install what is missing (Debian), build, run the scripted hot-desk
#   make test   install what is missing (Debian), build, run every test against real components
#   make race   the tests of RACE_PKGS under the race detector (part of make test, beside the plain run)
#   make chaos  build, run the fault-injecting group harness (all faults), one JSON row per fault
#   make upgrade-check FROM=DIR   the upgrade from the previous release built in DIR (in place, rolling)
#   make deb    build/hotdesk_<version>_amd64.deb and build/hotdesk-term_<version>_amd64.deb
#   make install PREFIX=/usr/local [DESTDIR=…]   install without a package manager

GO      ?= go
BIN     := bin
CMDS    := hotdeskd hotdesk-term hotdeskctl hotdesk-demo hotdesk-chaos
# The version every binary reports (--version, the log, the server record).
ifeq ($(origin VERSION),undefined)
VERSION := $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
endif
LDFLAGS := -X github.com/hotdesk/hotdesk/internal/version.Version=$(VERSION)
# The Debian version of VERSION (packaging/deb-version).
ifeq ($(origin DEB_VERSION),undefined)
DEB_VERSION := $(shell packaging/deb-version '$(VERSION)')
endif
# Debian packages the build and the tests need (cgo headers, weston, pcscd, PAM test modules;
# the package test: lintian to inspect the .debs, man-db for `man hotdeskctl`, zsh to check
# the generated completion).
DEB_PKGS := weston pcscd libpcsclite-dev vsmartcard-vpcd libpam0g-dev libpam-wrapper freerdp2-x11 xvfb x11-apps imagemagick libwayland-dev libxkbcommon-x11-dev libgles2-mesa-dev libegl1-mesa-dev libx11-xcb-dev libxcursor-dev libxfixes-dev libvulkan-dev pkg-config xdotool chromium
DEB_PKGS += lintian man-db zsh db-util nftables binutils
# cron, at: a pooled kiosk account's cron table and at jobs go with its session (weston tests).
DEB_PKGS += cron at
# python3: proto/conformance, the independent terminal TestConformance runs (openssl: its
# certificate checks).
DEB_PKGS += python3 openssl
# iproute2: ip netns, TUN links (internal/linkemu) between a terminal's namespace and its broker.
DEB_PKGS += iproute2

.PHONY: all build deps demo demo-card test test-plain lint fuzz chaos upgrade-check clean deb stage install package-test race race-pkgs

all: build

deps:
	@./.ci/deps $(DEB_PKGS)

# hotdesk-rdpwake: the C library hotdesk-term preloads into FreeRDP (see
# cmd/hotdesk-term/rdpwake); found next to bin/hotdesk-term.
RDPWAKE_SRC   := cmd/hotdesk-term/rdpwake/hotdesk-rdpwake.c
RDPWAKE_FLAGS := -O2 -Wall -shared -fPIC -D_FORTIFY_SOURCE=2 -fstack-protector-strong -Wl,-z,relro,-z,now

build:
	@mkdir -p $(BIN)
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN)/ $(addprefix ./cmd/,$(CMDS))
	$(CC) $(RDPWAKE_FLAGS) -o $(BIN)/hotdesk-rdpwake.so $(RDPWAKE_SRC)

demo: deps build
	./$(BIN)/hotdesk-demo -bin $(BIN)

# The smart-card demo: a virtual card moved between two virtual readers.
demo-card: deps build
	./$(BIN)/hotdesk-demo -bin $(BIN) -cards

# The packages whose tests run under the race detector: the broker's state
# machine, the registry, authentication and the daemon's wiring. `make test`
# runs them only there (not twice): the plain run takes every other package.
# Longest first: go test starts the packages' runs in this order, two at a
# time, and the daemon's end-to-end tests (the longest) started last made
# the run wait for them alone at its end.
RACE_PKGS := ./cmd/hotdeskd ./broker/... ./registry/... ./auth/...
# How many packages' tests run at once in the plain run. Packages whose
# tests wait raise -parallel themselves (testutil.RaiseParallel). With the
# race run beside it (its own 2), four packages run at once: the load that
# once made the chaos harness's quick run (TestChaosQuick) lose a desktop
# after broker_sigstop (wayray gave a compositor starved with the broker
# only 250 ms to answer; fixed), and that showed a terminal's black screen
# and a pairing cut off (both fixed); it has held since.
TEST_P ?= 2
# The plain run's longest packages, started first (they wait on daemons
# and timeouts far more than they compute; started last, the run waited a
# minute for them alone at its end).
PLAIN_FIRST := ./proto/conformance ./cmd/hotdesk-chaos ./cmd/hotdesk-bench ./cmd/hotdesk-term

# The plain run and the race run go side by side (one after the other, the
# CPU stood half idle: both mostly wait on daemons and timeouts), and
# TestAdversarial after the plain run, beside the race run's end.
test: deps build package-test lint
	$(MAKE) --no-print-directory -j2 test-plain race-pkgs

# gofmt, go vet and staticcheck with all its checks, style ones included
# (its version pinned here, fetched through the Go module proxy like the
# project's modules): a finding fails the run. The day it was added staticcheck found a condition written twice in
# a test, four unused declarations and two checks that were always true.
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2
lint:
	@unformatted="$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go' -not -path './bin/*'))"; \
	  if [ -n "$$unformatted" ]; then echo "gofmt -l: not formatted:" $$unformatted >&2; exit 1; fi
	$(GO) vet ./...
	$(GO) run $(STATICCHECK) -checks all ./...

test-plain:
	GO=$(GO) ./.ci/gotest -p $(TEST_P) -count=1 -timeout 20m $$($(GO) list $(PLAIN_FIRST)) \
		$$($(GO) list ./... | grep -vxF "$$($(GO) list $(RACE_PKGS) $(PLAIN_FIRST))")
	$(ADVERSARIAL)

# TestAdversarial runs on its own and verbose: go test shows a passing
# package's output only with -v, and the suite's figures (attacks tried,
# good-terminal failures, p99 before and under attack, resources back to
# baseline) are what it reports.
ADVERSARIAL = GO=$(GO) ./.ci/gotest -race -count=1 -timeout 10m -run '^TestAdversarial$$' -v ./cmd/hotdeskd

race-pkgs:
	GO=$(GO) ./.ci/gotest -race -count=1 -timeout 20m -skip '^TestAdversarial$$' $(RACE_PKGS)

race: race-pkgs
	$(ADVERSARIAL)

# Build both packages, inspect them, install the server package, run a
# hot-desk against the installed daemon, purge (.ci/package-test).
package-test: deb
	EXPECT_VERSION=$(VERSION) ./.ci/package-test $(BUILD)/hotdesk_$(DEB_VERSION)_amd64.deb $(BUILD)/hotdesk-term_$(DEB_VERSION)_amd64.deb

# A real group (3 etcd member processes, 3 hotdeskd) under every fault, one
# at a time; exits non-zero on any violation. CHAOS_FLAGS e.g. "-duration 10m -seed 7"
# (a -terminals or -tokens there wins over CHAOS_SIZE: 40 terminals and 20
# tokens, the load at which the last three bugs it found showed; the
# binary's own defaults are 6 and 4).
CHAOS_SIZE ?= -terminals 40 -tokens 20
chaos: build
	./$(BIN)/hotdesk-chaos -bin $(BIN) $(CHAOS_SIZE) $(CHAOS_FLAGS)

# The upgrade from the previous release (not part of `make test`: it needs
# that release built, FROM=its bin directory; README "Upgrading"): the demo
# with demo-1 upgraded in place under its desktops and terminals of both
# releases, then a rolling upgrade of a 3-broker group under the chaos
# harness's workload, one broker taken back down and up again.
#   git worktree add --detach ../hotdesk-prev <previous tag> && make -C ../hotdesk-prev build
#   make upgrade-check FROM=../hotdesk-prev/bin
upgrade-check: build
	@test -n "$(FROM)" || { echo "make upgrade-check FROM=<the previous release's bin directory>" >&2; exit 2; }
	./$(BIN)/hotdesk-demo -bin $(BIN) -from $(FROM)
	./$(BIN)/hotdesk-chaos -bin $(BIN) -from $(FROM) -quick -terminals 4 -tokens 2 \
	  -faults broker_upgrade,broker_upgrade,broker_downgrade,broker_upgrade,broker_upgrade

# Every fuzz target of the tree, one after the other, FUZZTIME each (not
# part of `make test`, whose plain run replays their seeds and the inputs
# under testdata/fuzz). A count ("100000x") rather than a duration avoids
# Go 1.26's coordinator ending a clean run with "context deadline exceeded"
# (golang/go#75804).
FUZZTIME ?= 30s
fuzz:
	@set -e; for pkg in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz' || true); do \
	    echo "== $$pkg $$f"; $(GO) test $$pkg -run '^$$' -fuzz "^$$f\$$" -fuzztime $(FUZZTIME) -parallel 1; \
	  done; \
	done

clean:
	rm -rf $(BIN) $(BUILD)

# ---- packages and installation ------------------------------------------

BUILD   := build
STAGE   := $(BUILD)/stage
# nfpm (github.com/goreleaser/nfpm) writes the .debs; built once from the
# Go module proxy into build/tools.
NFPM_VERSION := v2.45.2
NFPM    := $(BUILD)/tools/nfpm
# Release binaries: position-independent (ASLR for the whole binary, as
# Debian's hardening asks; hotdeskd runs as root and links C libraries), no
# build paths, no symbol tables (Debian strips). PIE compiles every
# dependency again, once, next to `make build`'s cache (about a minute on
# 2 cores the first time). cgo code gets Debian's hardening flags.
REL_FLAGS := -buildmode=pie -trimpath -ldflags "-s -w -linkmode=external $(LDFLAGS)"
stage: export CGO_CFLAGS = -O2 -g -D_FORTIFY_SOURCE=2 -fstack-protector-strong
stage: export CGO_LDFLAGS = -Wl,-z,relro,-z,now
PAM_PIN := configs/pam.d/hotdesk-pin
export SOURCE_DATE_EPOCH ?= $(shell git log -1 --format=%ct 2>/dev/null || date +%s)

$(NFPM):
	@mkdir -p $(dir $@)
	GOBIN=$(abspath $(dir $@)) $(GO) install github.com/goreleaser/nfpm/v2/cmd/nfpm@$(NFPM_VERSION)

# stage: everything the packages and `make install` ship, built and generated
# into build/stage: binaries (hotdesk-term without cgo and PC/SC, its PC/SC
# helper), man pages and completion from the binaries' own flags
# (`BINARY __gendocs`), the unit with the installed path.
stage:
	rm -rf $(STAGE) && mkdir -p $(STAGE)/bin $(STAGE)/pam.d
	$(GO) build $(REL_FLAGS) -o $(STAGE)/bin/ ./cmd/hotdeskd
	$(GO) build $(REL_FLAGS) -o $(STAGE)/bin/ ./cmd/hotdeskctl
	$(GO) build $(REL_FLAGS) -tags nopcsc -o $(STAGE)/bin/hotdesk-term ./cmd/hotdesk-term
	$(GO) build $(REL_FLAGS) -o $(STAGE)/bin/hotdesk-term-pcsc ./cmd/hotdesk-term
	mkdir -p $(STAGE)/lib && $(CC) $(RDPWAKE_FLAGS) -o $(STAGE)/lib/hotdesk-rdpwake.so $(RDPWAKE_SRC) && strip --strip-unneeded $(STAGE)/lib/hotdesk-rdpwake.so
	@# Each binary's documents go to its package's tree, $(STAGE)/PACKAGE/usr/share:
	@# man pages by their section (whatever pages a binary writes), gzipped.
	set -e; for bp in hotdeskd:hotdesk hotdeskctl:hotdesk hotdesk-term:hotdesk-term; do \
		b=$${bp%%:*}; share=$(STAGE)/$${bp##*:}/usr/share; \
		./$(STAGE)/bin/$$b __gendocs man $(STAGE)/gen/$$b; \
		./$(STAGE)/bin/$$b __gendocs bash $$share/bash-completion/completions; \
		./$(STAGE)/bin/$$b __gendocs zsh $$share/zsh/vendor-completions; \
		for m in $(STAGE)/gen/$$b/*; do \
			sec=$${m##*.}; install -D -m 0644 $$m $$share/man/man$$sec/$${m##*/}; gzip -9nf $$share/man/man$$sec/$${m##*/}; \
		done; \
	done
	sed 's|/usr/local/bin/|/usr/bin/|g' configs/hotdeskd.service > $(STAGE)/hotdeskd.service
	sed 's|/usr/local/bin/|/usr/bin/|g' configs/hotdesk-term.service > $(STAGE)/hotdesk-term.service
	cp $(PAM_PIN) $(STAGE)/pam.d/hotdesk-pin
	printf 'hotdesk (%s) unstable; urgency=medium\n\n  * Built from %s.\n\n -- hotdesk developers <hotdesk@users.noreply.github.com>  %s\n' \
		'$(DEB_VERSION)' '$(VERSION)' "$$(date -u -R -d @$(SOURCE_DATE_EPOCH))" | gzip -9n > $(STAGE)/changelog.gz

deb: $(NFPM) stage
	rm -f $(BUILD)/hotdesk_*_amd64.deb $(BUILD)/hotdesk-term_*_amd64.deb
	DEB_VERSION='$(DEB_VERSION)' $(NFPM) package -p deb -f packaging/hotdesk.yaml -t $(BUILD)/hotdesk_$(DEB_VERSION)_amd64.deb
	DEB_VERSION='$(DEB_VERSION)' $(NFPM) package -p deb -f packaging/hotdesk-term.yaml -t $(BUILD)/hotdesk-term_$(DEB_VERSION)_amd64.deb

# install: the same files as the packages, under PREFIX (default /usr/local),
# configuration under SYSCONFDIR (default /etc: PAM reads only /etc/pam.d and
# hotdeskd's default is /etc/hotdesk/hotdesk.hcl; existing files are kept),
# staged under DESTDIR if given. No users are created: see
# packaging/README.Debian.
PREFIX     ?= /usr/local
SYSCONFDIR ?= /etc
install: stage
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/libexec/hotdesk \
		$(DESTDIR)$(PREFIX)/share/bash-completion/completions $(DESTDIR)$(PREFIX)/share/zsh/site-functions \
		$(DESTDIR)$(PREFIX)/lib/systemd/system $(DESTDIR)$(PREFIX)/lib/tmpfiles.d \
		$(DESTDIR)$(SYSCONFDIR)/hotdesk $(DESTDIR)$(SYSCONFDIR)/pam.d
	install -m 0755 $(STAGE)/bin/hotdeskd $(STAGE)/bin/hotdeskctl $(STAGE)/bin/hotdesk-term $(DESTDIR)$(PREFIX)/bin/
	install -m 0755 $(STAGE)/bin/hotdesk-term-pcsc $(DESTDIR)$(PREFIX)/libexec/hotdesk/
	install -d $(DESTDIR)$(PREFIX)/lib/hotdesk && install -m 0644 $(STAGE)/lib/hotdesk-rdpwake.so $(DESTDIR)$(PREFIX)/lib/hotdesk/
	for p in hotdesk hotdesk-term; do share=$(STAGE)/$$p/usr/share; \
		for d in $$share/man/man*; do install -d $(DESTDIR)$(PREFIX)/share/man/$${d##*/}; install -m 0644 $$d/* $(DESTDIR)$(PREFIX)/share/man/$${d##*/}/; done; \
		install -m 0644 $$share/bash-completion/completions/* $(DESTDIR)$(PREFIX)/share/bash-completion/completions/; \
		install -m 0644 $$share/zsh/vendor-completions/* $(DESTDIR)$(PREFIX)/share/zsh/site-functions/; \
	done
	sed -e 's|/usr/local/bin/|$(PREFIX)/bin/|g' -e 's|/etc/hotdesk/|$(SYSCONFDIR)/hotdesk/|g' configs/hotdeskd.service \
		> $(DESTDIR)$(PREFIX)/lib/systemd/system/hotdeskd.service
	sed -e 's|/usr/local/bin/|$(PREFIX)/bin/|g' -e 's|/etc/hotdesk/|$(SYSCONFDIR)/hotdesk/|g' configs/hotdesk-term.service \
		> $(DESTDIR)$(PREFIX)/lib/systemd/system/hotdesk-term.service
	install -m 0644 configs/xorg-kiosk.service $(DESTDIR)$(PREFIX)/lib/systemd/system/xorg-kiosk.service
	install -m 0644 packaging/hotdesk.tmpfiles $(DESTDIR)$(PREFIX)/lib/tmpfiles.d/hotdesk.conf
	test -e $(DESTDIR)$(SYSCONFDIR)/hotdesk/hotdesk-term.hcl || install -m 0644 configs/hotdesk-term.hcl $(DESTDIR)$(SYSCONFDIR)/hotdesk/hotdesk-term.hcl
	test -e $(DESTDIR)$(SYSCONFDIR)/hotdesk/hotdesk.hcl || install -m 0644 configs/hotdesk.hcl $(DESTDIR)$(SYSCONFDIR)/hotdesk/hotdesk.hcl
	test -e $(DESTDIR)$(SYSCONFDIR)/pam.d/hotdesk || install -m 0644 configs/pam.d/hotdesk $(DESTDIR)$(SYSCONFDIR)/pam.d/hotdesk
	test -e $(DESTDIR)$(SYSCONFDIR)/pam.d/hotdesk-pin || install -m 0644 $(PAM_PIN) $(DESTDIR)$(SYSCONFDIR)/pam.d/hotdesk-pin
	test -e $(DESTDIR)$(SYSCONFDIR)/pam.d/hotdesk-admin || install -m 0644 packaging/pam.d/hotdesk-admin $(DESTDIR)$(SYSCONFDIR)/pam.d/hotdesk-admin
