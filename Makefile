# dotproxy: GNU Make, non-recursive, out-of-tree in build/.
#   make            build build/dotproxy and build/dotproxyctl
#   make check      unit tests, fuzz corpus replay, integration tests
#   make fuzz       run each libFuzzer target for FUZZ_SECONDS (default 30)
#   make lint       layering check, clang-format check, clang-tidy and cppcheck
#   make run        run the proxy with its defaults (ARGS='...' to pass options)
#   make demo       offline end-to-end demo (local unbound over TLS, dig through dotproxy)
#   make install    the programs, man pages, systemd units, sysusers.d file and
#                   an example config (paths below; DESTDIR= for staging)
#   make uninstall  remove them again (the config only if unchanged)
#   make SANITIZE=1 ASan+UBSan build in build/sanitize/
#   make ENSURE_DEPS=0 ...   skip scripts/ensure-deps (package builds)

PREFIX ?= /usr/local
DESTDIR ?=
SBINDIR ?= $(PREFIX)/sbin
MANDIR ?= $(PREFIX)/share/man
# /etc whatever the prefix: the unit and the docs name /etc/dotproxy/dotproxy.conf.
SYSCONFDIR ?= /etc
# systemd looks in /usr/local/lib/systemd/system and /usr/local/lib/sysusers.d
# too; Debian's own are /lib/systemd/system and /usr/lib/sysusers.d.
UNITDIR ?= $(PREFIX)/lib/systemd/system
SYSUSERSDIR ?= $(PREFIX)/lib/sysusers.d
PYTHON ?= /usr/bin/python3

# What `make` builds and `make install` puts in SBINDIR: build/NAME, each with
# its manual page doc/NAME.8.
PROGRAMS := dotproxy dotproxyctl
PYTEST_ARGS ?=

PKGS := libuv openssl libnghttp2 libprotobuf-c libfstrm
CC ?= cc
ifeq ($(SANITIZE),1)
BUILD := build/sanitize
SAN_FLAGS := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all
OPT_FLAGS := -O1 -g
else
BUILD := build
SAN_FLAGS :=
OPT_FLAGS := -O2 -g
endif

WARN := -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Wformat=2 \
	-Wimplicit-fallthrough -Wvla -Wconversion -Wno-sign-conversion
HARDEN := -fstack-protector-strong -fstack-clash-protection -fPIE
ifneq ($(SANITIZE),1)
HARDEN += -D_FORTIFY_SOURCE=3
endif
ifeq ($(WERROR),1)
WARN += -Werror
endif

PKG_CFLAGS = $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS = $(shell pkg-config --libs $(PKGS) 2>/dev/null)
CFLAGS_ALL = -std=gnu11 -D_GNU_SOURCE $(OPT_FLAGS) $(WARN) $(HARDEN) $(SAN_FLAGS) -I. $(PKG_CFLAGS) $(CFLAGS) -MMD -MP
LDFLAGS_ALL = -pie -Wl,-z,relro,-z,now -Wl,--as-needed $(SAN_FLAGS) $(LDFLAGS)

LIB_SRC := $(wildcard lib/*.c)
DAEMON_SRC := $(wildcard daemon/*.c)
TOOLS_SRC := $(wildcard tools/*.c)
# Generated from lib/dnstap.proto by protoc-c (never committed), compiled
# without our warnings (they are not ours to fix) and archived with lib/.
GEN := $(BUILD)/gen
PROTO_C := $(GEN)/dnstap.pb-c.c
PROTO_H := $(GEN)/dnstap.pb-c.h
LIB_OBJ := $(LIB_SRC:%.c=$(BUILD)/%.o) $(PROTO_C:.c=.o)
DAEMON_OBJ := $(DAEMON_SRC:%.c=$(BUILD)/%.o)
UNIT_SRC := $(wildcard tests/unit/test_*.c)
UNIT_BIN := $(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/%)

.PHONY: all check unit integration fuzz-replay fuzz lint run demo install uninstall clean deps
all: $(PROGRAMS:%=$(BUILD)/%)

$(BUILD)/dotproxy: $(DAEMON_OBJ) $(BUILD)/libdotproxy.a
	$(CC) $(LDFLAGS_ALL) -o $@ $^ $(PKG_LIBS)

# The control client: lib/ctlproto and what it needs from libdotproxy.a, no
# libuv, no OpenSSL.
$(BUILD)/dotproxyctl: $(BUILD)/tools/dotproxyctl.o $(BUILD)/libdotproxy.a
	$(CC) $(LDFLAGS_ALL) -o $@ $^

$(BUILD)/libdotproxy.a: $(LIB_OBJ)
	rm -f $@
	ar rcs $@ $^

$(BUILD)/%.o: %.c | deps
	@mkdir -p $(@D)
	$(CC) $(CFLAGS_ALL) -c -o $@ $<

$(PROTO_C) $(PROTO_H) &: lib/dnstap.proto | deps
	@mkdir -p $(GEN)
	protoc-c --proto_path=lib --c_out=$(GEN) lib/dnstap.proto

$(PROTO_C:.c=.o): $(PROTO_C) $(PROTO_H)
	$(CC) -std=gnu11 $(OPT_FLAGS) $(HARDEN) $(SAN_FLAGS) -I$(GEN) $(PKG_CFLAGS) $(CFLAGS) -c -o $@ $<

# What includes the generated header finds it in $(GEN).
$(BUILD)/lib/dnstap.o $(BUILD)/tests/test_dnstap: $(PROTO_H)
$(BUILD)/lib/dnstap.o $(BUILD)/tests/test_dnstap: CFLAGS_ALL += -I$(GEN)

# A unit test links libdotproxy.a, plus the daemon/ objects named as extra
# prerequisites of its binary below (none for the lib/ tests).
$(BUILD)/tests/test_%: tests/unit/test_%.c $(BUILD)/libdotproxy.a | deps
	@mkdir -p $(@D)
	$(CC) $(CFLAGS_ALL) -Wno-missing-prototypes $(shell pkg-config --cflags cmocka) -o $@ $< \
		$(filter $(BUILD)/daemon/%.o,$^) $(BUILD)/libdotproxy.a $(LDFLAGS_ALL) $(PKG_LIBS) \
		$(shell pkg-config --libs cmocka) -lm

# The upstream layer alone, over a fake transport: no sockets, no TLS (and
# dnstap, which upstream.c reports to, off).
$(BUILD)/tests/test_upstream: $(BUILD)/daemon/upstream.o $(BUILD)/daemon/loop.o $(BUILD)/daemon/dnstap.o
# Socket activation: real sockets, no loop.
$(BUILD)/tests/test_sdlisten: $(BUILD)/daemon/sdlisten.o

# Installs what the build and the tests need, once per machine (apt-get as
# root, else prints the command).  A stamp keeps later builds from asking again.
# ENSURE_DEPS=0 skips it: a package build declares its build dependencies
# (debian/control) and must not install anything.
ifeq ($(ENSURE_DEPS),0)
deps:
else
deps: build/.deps-ok
endif
build/.deps-ok: scripts/ensure-deps
	@scripts/ensure-deps
	@mkdir -p build && touch $@

unit: $(UNIT_BIN)
	@for t in $(UNIT_BIN); do echo "== $$t"; $$t || exit 1; done

# -rs: the reason of every skipped test is printed (a missing tool, for one).
integration: $(BUILD)/dotproxy $(BUILD)/dotproxyctl
	DOTPROXY=$(CURDIR)/$(BUILD)/dotproxy DOTPROXYCTL=$(CURDIR)/$(BUILD)/dotproxyctl $(PYTHON) -m pytest -q -rs tests/integration $(PYTEST_ARGS)

fuzz-replay:
	tests/fuzz/run.sh replay

# FUZZ_SECONDS=N per target (default 30).
fuzz:
	tests/fuzz/run.sh fuzz

check: all unit fuzz-replay integration

# Static analysis with the checked-in configurations: formatting
# (.clang-format), clang-tidy (.clang-tidy) and cppcheck, then our own
# layering check (scripts/check-layers: no include cycle in daemon/, arrows
# down daemon/LAYERS, lib/ pure, every header compiles alone); any finding fails.
LINT_SRC := $(LIB_SRC) $(DAEMON_SRC) $(TOOLS_SRC)
lint: $(PROTO_H)
	CC="$(CC)" CHECK_LAYERS_CFLAGS="$(PKG_CFLAGS) -Werror" scripts/check-layers
	clang-format --dry-run -Werror $(LINT_SRC) $(wildcard lib/*.h daemon/*.h)
	clang-tidy -quiet $(LINT_SRC) -- -std=gnu11 -D_GNU_SOURCE -I. -I$(GEN) $(PKG_CFLAGS)
	cppcheck -q --error-exitcode=1 --enable=warning,performance,portability --std=c11 \
		--inline-suppr -I. $(LINT_SRC)

run: $(BUILD)/dotproxy
	$(BUILD)/dotproxy $(ARGS)

demo: $(BUILD)/dotproxy
	$(PYTHON) tests/integration/demo.py $(CURDIR)/$(BUILD)/dotproxy

# The units and the example config name /usr/local/sbin and /etc/dotproxy:
# installed copies name SBINDIR and SYSCONFDIR instead.
SUBST_PATHS = sed -e 's|/usr/local/sbin/|$(SBINDIR)/|g' -e 's|/etc/dotproxy/|$(SYSCONFDIR)/dotproxy/|g'
CONF := $(DESTDIR)$(SYSCONFDIR)/dotproxy/dotproxy.conf

# The configuration is installed only where there is none: an edited one is
# never overwritten (`make uninstall` keeps it too).
install: $(PROGRAMS:%=$(BUILD)/%)
	install -d $(DESTDIR)$(SBINDIR) $(DESTDIR)$(MANDIR)/man8 $(DESTDIR)$(UNITDIR) \
		$(DESTDIR)$(SYSUSERSDIR) $(DESTDIR)$(SYSCONFDIR)/dotproxy
	install -m 755 $(PROGRAMS:%=$(BUILD)/%) $(DESTDIR)$(SBINDIR)/
	install -m 644 $(PROGRAMS:%=doc/%.8) $(DESTDIR)$(MANDIR)/man8/
	$(SUBST_PATHS) contrib/dotproxy.service >$(DESTDIR)$(UNITDIR)/dotproxy.service
	$(SUBST_PATHS) contrib/dotproxy.socket >$(DESTDIR)$(UNITDIR)/dotproxy.socket
	chmod 644 $(DESTDIR)$(UNITDIR)/dotproxy.service $(DESTDIR)$(UNITDIR)/dotproxy.socket
	install -m 644 contrib/dotproxy.sysusers $(DESTDIR)$(SYSUSERSDIR)/dotproxy.conf
	@if [ -e $(CONF) ]; then \
		echo "$(CONF) exists: kept (the example is contrib/dotproxy.conf)"; \
	else \
		echo "$(SUBST_PATHS) contrib/dotproxy.conf >$(CONF)"; \
		$(SUBST_PATHS) contrib/dotproxy.conf >$(CONF) && chmod 644 $(CONF); \
	fi

uninstall:
	rm -f $(PROGRAMS:%=$(DESTDIR)$(SBINDIR)/%) $(PROGRAMS:%=$(DESTDIR)$(MANDIR)/man8/%.8) \
		$(DESTDIR)$(UNITDIR)/dotproxy.service $(DESTDIR)$(UNITDIR)/dotproxy.socket \
		$(DESTDIR)$(SYSUSERSDIR)/dotproxy.conf
	@if [ -e $(CONF) ] && ! $(SUBST_PATHS) contrib/dotproxy.conf | cmp -s - $(CONF); then \
		echo "$(CONF) was changed: kept"; \
	else \
		echo "rm -f $(CONF)"; rm -f $(CONF); \
		rmdir $(DESTDIR)$(SYSCONFDIR)/dotproxy 2>/dev/null || true; \
	fi

clean:
	rm -rf build

-include $(LIB_OBJ:.o=.d) $(DAEMON_OBJ:.o=.d) $(BUILD)/tools/dotproxyctl.d $(UNIT_BIN:=.d)

# Benchmark against peer DoT proxies on loopback (bench/README.md); ROUNDS=N
# (default 3), BENCH_SECONDS=N per measurement (default 5); BENCH_SERVE=0, dot
# or doh: which serving tables follow the main one (default both);
# BENCH_UPSTREAM_TRANSPORT=0 skips the DoH-against-DoT-upstreams table. `deps` is phony, so
# this runs every time even though bench/ is a directory (bench is not in .PHONY).
bench: $(BUILD)/dotproxy $(BUILD)/tlsload deps
	$(PYTHON) bench/run.py --dotproxy $(BUILD)/dotproxy --tlsload $(BUILD)/tlsload

# The benchmark's TLS connection load generator (new handshakes per second);
# not in build/bench/, which each benchmark run empties.
$(BUILD)/tlsload: bench/tlsload.c | deps
	@mkdir -p $(@D)
	$(CC) $(CFLAGS_ALL) -o $@ $< $(LDFLAGS_ALL) $(shell pkg-config --libs openssl) -lpthread
