#!/usr/bin/env bash
# The project's test command (make test, .ci/run): lint, then the whole pytest suite.
# The suite starts its own Kafka broker on a test port (see tests/conftest.py) and stops it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
BIN=.venv/bin
start=$(date +%s)
echo "== ruff"
$BIN/ruff check .
echo "== chromium (Debian's, for the live board's browser test; skipped without it)"
scripts/install-chromium.sh || echo "chromium not installed: tests/browser/test_gateway_browser.py will skip" >&2
echo "== pytest"
set +e
$BIN/python -m pytest "$@"
rc=$?
set -e
echo "== tests took $(( $(date +%s) - start ))s"
if [ "$rc" -eq 5 ]; then echo "pytest collected no tests: failing" >&2; exit 1; fi
exit "$rc"
