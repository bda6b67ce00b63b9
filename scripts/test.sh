#!/usr/bin/env bash
# Run the test suite (setting up first if needed). Extra arguments go to pytest.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh || exit 1
bash scripts/browser.sh
VENV=${AGENTENV_VENV:-.venv}
"$VENV/bin/python" -m pytest -q "$@"
status=$?
if [ "$status" -eq 5 ]; then
  # pytest's "no tests collected" (e.g. a -k filter that matches nothing) is not a failure
  echo "no tests were collected" >&2
  exit 0
fi
exit "$status"
