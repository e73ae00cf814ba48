# hotdesk — build, demo, test.
#
#   make demo   install what is missing (Debian), build, run the scripted hot-desk
#   make test   install what is missing (Debian), build, run every test against real components
#   make chaos  build, run the fault-injecting group harness (all faults), one JSON row per fault

GO      ?= go
BIN     := bin
CMDS    := hotdeskd hotdesk-term hotdeskctl hotdesk-demo hotdesk-chaos
# Debian packages the build and the tests need (cgo headers, weston, pcscd, PAM test modules).
DEB_PKGS := weston pcscd libpcsclite-dev vsmartcard-vpcd libpam0g-dev libpam-wrapper freerdp2-x11 xvfb x11-apps imagemagick libwayland-dev libxkbcommon-x11-dev libgles2-mesa-dev libegl1-mesa-dev libx11-xcb-dev libxcursor-dev libxfixes-dev libvulkan-dev pkg-config xdotool chromium

.PHONY: all build deps demo demo-card test test-short vet fuzz chaos clean

all: build

deps:
	@./.ci/deps $(DEB_PKGS)

build:
	@mkdir -p $(BIN)
	$(GO) build -o $(BIN)/ $(addprefix ./cmd/,$(CMDS))

demo: deps build
	./$(BIN)/hotdesk-demo -bin $(BIN)

# The smart-card demo: a virtual card moved between two virtual readers.
demo-card: deps build
	./$(BIN)/hotdesk-demo -bin $(BIN) -cards

test: deps build
	$(GO) vet ./...
	$(GO) test -count=1 -timeout 20m ./...

# A real group (3 etcd member processes, 3 hotdeskd) under every fault, one
# at a time; exits non-zero on any violation. CHAOS_FLAGS e.g. "-duration 10m -seed 7".
chaos: build
	./$(BIN)/hotdesk-chaos -bin $(BIN) $(CHAOS_FLAGS)

# The fuzz targets, briefly (not part of `make test`).
fuzz:
	$(GO) test ./proto -run '^$$' -fuzz '^FuzzDecode$$' -fuzztime 30s
	$(GO) test ./proto -run '^$$' -fuzz '^FuzzReadFrame$$' -fuzztime 30s

clean:
	rm -rf $(BIN)
