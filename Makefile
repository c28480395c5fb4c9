# Build and install npzfs:
#
#   make                               # cargo build --release
#   sudo make install                  # binary, man page, systemd units under /usr/local
#   make install PREFIX=/usr DESTDIR=/tmp/pkg   # packaging: paths inside DESTDIR
#   sudo make uninstall
#
# BIN names the binary to install (default: the release build), so an install can reuse a
# binary built elsewhere. The units' ExecStart= is rewritten to $(PREFIX)/bin/npzfs.

PREFIX     ?= /usr/local
DESTDIR    ?=
BINDIR     ?= $(PREFIX)/bin
MANDIR     ?= $(PREFIX)/share/man
UNITDIR    ?= $(PREFIX)/lib/systemd/system
DOCDIR     ?= $(PREFIX)/share/doc/npzfs
CARGO      ?= cargo
BIN        ?= target/release/npzfs

INSTALL    ?= install

.PHONY: all install uninstall

all:
	$(CARGO) build --release --locked

$(BIN):
	$(CARGO) build --release --locked

install: $(BIN)
	$(INSTALL) -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(MANDIR)/man1 $(DESTDIR)$(UNITDIR) $(DESTDIR)$(DOCDIR)
	$(INSTALL) -m 0755 $(BIN) $(DESTDIR)$(BINDIR)/npzfs
	$(BIN) --print-man-page > $(DESTDIR)$(MANDIR)/man1/npzfs.1.tmp
	mv $(DESTDIR)$(MANDIR)/man1/npzfs.1.tmp $(DESTDIR)$(MANDIR)/man1/npzfs.1
	chmod 0644 $(DESTDIR)$(MANDIR)/man1/npzfs.1
	sed 's|/usr/local/bin/npzfs|$(BINDIR)/npzfs|g' systemd/npzfs@.service > $(DESTDIR)$(UNITDIR)/npzfs@.service
	chmod 0644 $(DESTDIR)$(UNITDIR)/npzfs@.service
	$(INSTALL) -m 0644 systemd/npzfs.env.example systemd/mnt-data.mount $(DESTDIR)$(DOCDIR)/
	$(INSTALL) -m 0644 systemd/README.md $(DESTDIR)$(DOCDIR)/systemd.md

uninstall:
	rm -f $(DESTDIR)$(BINDIR)/npzfs $(DESTDIR)$(MANDIR)/man1/npzfs.1 $(DESTDIR)$(UNITDIR)/npzfs@.service
	rm -rf $(DESTDIR)$(DOCDIR)
