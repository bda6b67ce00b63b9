# Sourced by setup.sh and browser.sh: apt_install WHY PACKAGE... installs Debian packages with
# apt-get (through sudo when not root; apt-get update once if the first try fails). Never fails:
# the caller checks afterwards what is still missing.
apt_install() {
  local why=$1
  shift
  local sudo=""
  if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then sudo="sudo -n"; fi
  if command -v apt-get >/dev/null 2>&1 && { [ "$(id -u)" -eq 0 ] || [ -n "$sudo" ]; }; then
    echo "agentenv: installing $* ($why) with apt-get" >&2
    export DEBIAN_FRONTEND=noninteractive
    # shellcheck disable=SC2086  # $sudo is a word list
    $sudo apt-get install -y --no-install-recommends "$@" >/dev/null 2>&1 ||
      { $sudo apt-get update -q >/dev/null 2>&1 &&
        $sudo apt-get install -y --no-install-recommends "$@" >/dev/null 2>&1; } || true
  fi
}
