# Build, test and demonstrate the Core Lightning backup tools.
GO      ?= go
BIN     := bin
DEMO    ?= $(CURDIR)/demo-store
# make install puts the two binaries a node needs into $(DESTDIR)$(PREFIX)/bin
# (DESTDIR stages a package's file tree).
PREFIX  ?= /usr/local
BINDIR  ?= $(PREFIX)/bin
INSTALLED := backup-cli backup-plugin

.PHONY: build test demo demo-s3 bench benchmark fuzz clean install install-bin

build:
	$(GO) build -o $(BIN)/ ./cmd/...

# The installed binaries are built with -trimpath, so that they hold no path
# of the machine that built them.
install-bin:
	$(GO) build -trimpath -o $(BIN)/ $(addprefix ./cmd/,$(INSTALLED))

install: install-bin
	install -d $(DESTDIR)$(BINDIR)
	install -m 0755 $(addprefix $(BIN)/,$(INSTALLED)) $(DESTDIR)$(BINDIR)/

# The test suite CI runs (.ci/run).
test:
	$(GO) vet ./...
	$(GO) test -race -timeout 20m ./...

# The main job on bundled real data: the real plugin binary is fed a fresh
# node's real recorded db_write trace (two lightningd runs) as lightningd
# would, with compactions along the way; the node is restored and compared
# with the node's own database, table by table; then a Python-plugin backup
# file is restored and compared.
demo: build
	rm -rf $(DEMO) && mkdir -p $(DEMO)/lightning
	$(BIN)/backup-cli init --lightning-dir $(DEMO)/lightning file://$(DEMO)/store
	$(BIN)/trace-player play --plugin $(BIN)/backup-plugin --lightning-dir $(DEMO)/lightning --compact-every 100 testdata/trace1.jsonl
	$(BIN)/backup-cli compact file://$(DEMO)/store
	$(BIN)/backup-cli list file://$(DEMO)/store
	$(BIN)/backup-cli restore file://$(DEMO)/store $(DEMO)/restored.sqlite3
	$(BIN)/trace-player compare $(DEMO)/restored.sqlite3 testdata/trace1-final.sqlite3
	$(BIN)/backup-cli restore file://$(CURDIR)/testdata/legacy-v1.dbak $(DEMO)/legacy.sqlite3
	$(BIN)/trace-player compare $(DEMO)/legacy.sqlite3 testdata/legacy-v1-live.sqlite3

# The same through a store server on loopback: backup-cli server with an
# auth file and TLS (a self-signed key the client pins), a node set up with
# its token (a 0600 file from add-token --out) over socket:...?tls=, the real
# plugin fed trace1, restore through the server, compare; then SIGTERM.
DEMO_ADDR ?= 127.0.0.1:19737
DEMO_URL = socket:$(DEMO_ADDR)?tls=$$(cat $(DEMO)-remote/fingerprint)
demo-remote: build
	rm -rf $(DEMO)-remote && mkdir -p $(DEMO)-remote/lightning
	$(BIN)/backup-cli server add-token --auth $(DEMO)-remote/auth --node alice --out $(DEMO)-remote/alice.token
	$(BIN)/backup-cli server tls-fingerprint --tls-self-signed $(DEMO)-remote/tls > $(DEMO)-remote/fingerprint
	$(BIN)/backup-cli server --auth $(DEMO)-remote/auth --tls-self-signed $(DEMO)-remote/tls file://$(DEMO)-remote/store $(DEMO_ADDR) > $(DEMO)-remote/server.log 2>&1 & echo $$! > $(DEMO)-remote/server.pid
	sleep 1
	$(BIN)/backup-cli init --lightning-dir $(DEMO)-remote/lightning --node alice --token-file $(DEMO)-remote/alice.token "$(DEMO_URL)"
	$(BIN)/trace-player play --plugin $(BIN)/backup-plugin --lightning-dir $(DEMO)-remote/lightning --compact-every 100 testdata/trace1.jsonl
	$(BIN)/backup-cli list --token-file $(DEMO)-remote/alice.token "$(DEMO_URL)"
	$(BIN)/backup-cli restore --node alice --token-file $(DEMO)-remote/alice.token "$(DEMO_URL)" $(DEMO)-remote/restored.sqlite3
	$(BIN)/trace-player compare $(DEMO)-remote/restored.sqlite3 testdata/trace1-final.sqlite3
	kill -TERM $$(cat $(DEMO)-remote/server.pid)
	cat $(DEMO)-remote/server.log

# The same into a bucket of a real S3-compatible server on loopback
# (versitygw: go install github.com/versity/versitygw/cmd/versitygw@v1.8.0),
# its keys in a 0600 credentials file that backup.lock names.
DEMO_S3_ADDR ?= 127.0.0.1:19738
DEMO_S3_URL = s3://demo-bucket/cln?endpoint=$(DEMO_S3_ADDR)&tls=false&path-style=true&region=us-east-1
demo-s3: build
	rm -rf $(DEMO)-s3 && mkdir -p $(DEMO)-s3/lightning $(DEMO)-s3/gw
	printf '[default]\naws_access_key_id = demo\naws_secret_access_key = demosecret\n' > $(DEMO)-s3/credentials && chmod 600 $(DEMO)-s3/credentials
	versitygw --port $(DEMO_S3_ADDR) --access demo --secret demosecret posix $(DEMO)-s3/gw > $(DEMO)-s3/versitygw.log 2>&1 & echo $$! > $(DEMO)-s3/versitygw.pid
	sleep 1
	$(BIN)/backup-cli init --s3-credentials $(DEMO)-s3/credentials --lightning-dir $(DEMO)-s3/lightning "$(DEMO_S3_URL)"
	$(BIN)/trace-player play --plugin $(BIN)/backup-plugin --lightning-dir $(DEMO)-s3/lightning --compact-every 100 testdata/trace1.jsonl
	$(BIN)/backup-cli compact --s3-credentials $(DEMO)-s3/credentials "$(DEMO_S3_URL)"
	$(BIN)/backup-cli list --s3-credentials $(DEMO)-s3/credentials "$(DEMO_S3_URL)"
	$(BIN)/backup-cli restore --s3-credentials $(DEMO)-s3/credentials "$(DEMO_S3_URL)" $(DEMO)-s3/restored.sqlite3
	$(BIN)/trace-player compare $(DEMO)-s3/restored.sqlite3 testdata/trace1-final.sqlite3
	kill -TERM $$(cat $(DEMO)-s3/versitygw.pid)

bench:
	$(GO) test -run '^$$' -bench . -benchtime 3x ./...

# The whole pipeline against the page bound and the Python plugin's approach
# (docs/benchmark.md): 3 nodes x 40 MB x 12 steps sharing one store.
# BENCHFLAGS adds flags (e.g. --json, --vacuum-step 6; --encrypt runs it
# again on an encrypted store and reports both).
benchmark: build
	$(BIN)/backup-bench $(BENCHFLAGS)

# Every fuzz target of every package, FUZZTIME each.
FUZZTIME ?= 20s
fuzz:
	@set -e; for pkg in $$($(GO) list ./...); do \
	  for t in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz' || true); do \
	    echo "== $$pkg $$t"; $(GO) test -run '^$$$$' -fuzz "^$$t\$$" -fuzztime $(FUZZTIME) $$pkg; \
	  done; done

clean:
	rm -rf $(BIN) $(DEMO) $(DEMO)-remote $(DEMO)-s3
