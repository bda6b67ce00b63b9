#!/usr/bin/env bash
# Headless Chromium for the viewer's browser tests (tests/view): Debian's chromium and
# chromium-driver, installed with apt-get (through sudo when not root) when missing. Never fails:
# without them the browser tests skip, naming what is missing.
set -uo pipefail

browser_missing() {
  local missing=()
  [ -x /usr/bin/chromium ] || missing+=(chromium)
  [ -x /usr/bin/chromedriver ] || missing+=(chromium-driver)
  echo "${missing[*]}"
}
MISSING=$(browser_missing)
[ -z "$MISSING" ] && exit 0

SUDO=""
if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then SUDO="sudo -n"; fi
if command -v apt-get >/dev/null 2>&1 && { [ "$(id -u)" -eq 0 ] || [ -n "$SUDO" ]; }; then
  echo "agentenv: installing $MISSING (headless browser tests) with apt-get" >&2
  export DEBIAN_FRONTEND=noninteractive
  # shellcheck disable=SC2086  # $SUDO and $MISSING are word lists
  $SUDO apt-get install -y --no-install-recommends $MISSING >/dev/null 2>&1 ||
    { $SUDO apt-get update -q >/dev/null 2>&1 &&
      $SUDO apt-get install -y --no-install-recommends $MISSING >/dev/null 2>&1; } || true
fi
if [ -n "$(browser_missing)" ]; then
  echo "agentenv: could not install $(browser_missing); the viewer's browser tests will skip" \
    "(as root: apt-get install -y --no-install-recommends chromium chromium-driver)" >&2
fi
exit 0
