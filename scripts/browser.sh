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

# shellcheck source=scripts/apt.sh
source "$(dirname "$0")/apt.sh"
# shellcheck disable=SC2086  # $MISSING is a word list
apt_install "headless browser tests" $MISSING
if [ -n "$(browser_missing)" ]; then
  echo "agentenv: could not install $(browser_missing); the viewer's browser tests will skip" \
    "(as root: apt-get install -y --no-install-recommends chromium chromium-driver)" >&2
fi
exit 0
