# mk/deb.mk: the Debian package (debian/, built with dh-lua).
# dh-lua writes next to the sources (debian/<files>, <ver>-dingtalk/, libtool
# files), so the package is built in a copy of the checkout under build/deb/;
# the .deb lands in build/deb/ (git-ignored), the checkout stays untouched.

DEB_OUT     = build/deb
DEB_VERSION = $(shell dpkg-parsechangelog -l debian/changelog -S Version 2>/dev/null)
DEB_SRC     = $(DEB_OUT)/lua-dingtalk-$(DEB_VERSION)
DEB_FILE    = $(DEB_OUT)/lua-dingtalk_$(DEB_VERSION)_$(shell dpkg --print-architecture 2>/dev/null).deb
# What the copy holds: the files of the package's directories that git
# tracks, plus untracked ones that are not ignored (work in progress is
# packaged as it is). The .deb is rebuilt when one of them changes, so a
# second `make deb` (the spec's, check-deb's) costs nothing.
DEB_DIRS    = debian src lua bin
DEB_INPUTS  = $(wildcard $(shell git ls-files --cached --others --exclude-standard $(DEB_DIRS) 2>/dev/null))

.PHONY: deb check-deb

deb: $(DEB_FILE)   ## build build/deb/lua-dingtalk_*.deb with dh-lua (Lua 5.1-5.4, /usr/bin/dingtalk on Lua 5.4)

# Outside git, the copy is the whole of those directories.
$(DEB_FILE): $(DEB_INPUTS)
	@tools/deps deb
	@rm -rf $(DEB_OUT) && mkdir -p $(DEB_SRC)
	@if [ -n "$(DEB_INPUTS)" ]; then \
	  printf '%s\n' $(DEB_INPUTS) | tar -cf - -T - | tar -xf - -C $(DEB_SRC); \
	else \
	  tar -cf - $(DEB_DIRS) | tar -xf - -C $(DEB_SRC); \
	fi
	@echo "deb: dpkg-buildpackage in $(DEB_SRC) (log: $(DEB_OUT)/build.log)"
	@cd $(DEB_SRC) && DEB_BUILD_OPTIONS=noautodbgsym dpkg-buildpackage -b -us -uc >../build.log 2>&1 \
	  || { tail -n 40 ../build.log; echo "deb: FAILED (log: $(DEB_OUT)/build.log)"; exit 1; }
	@ls $(DEB_FILE)
	@if command -v lintian >/dev/null; then \
	  lintian --fail-on error,warning $(DEB_FILE) >$(DEB_OUT)/lintian.log 2>&1; rc=$$?; \
	  grep -v 'running with root privileges' $(DEB_OUT)/lintian.log || true; \
	  [ $$rc -eq 0 ] || { echo "deb: lintian FAILED (debian/lua-dingtalk.lintian-overrides lists what is accepted)"; exit 1; }; \
	  echo "deb: lintian: no error, no warning"; \
	fi

# Installs the package into a throwaway root (a private mount namespace in
# which its files lie over the real /usr, /usr/local hidden) and uses it
# there: every interpreter loads the packaged module and makes one call to
# the emulator, and /usr/bin/dingtalk makes one through the CLI.
check-deb: deb   ## install the .deb in a throwaway root: lua5.1-5.4, luajit and /usr/bin/dingtalk each call the emulator
	@tools/with-emulator tools/check-deb $(DEB_FILE)
