#!/usr/bin/env bash
# Debian packages the test suite uses, installed only when missing (idempotent):
#   prometheus + promtool  (real server for metric/PromQL tests; scripts/install-prometheus.sh)
#   docker-compose         (validates docker-compose.yml with `docker-compose config`; no engine needed)
#   chromium               (headless browser test of the live board; scripts/install-chromium.sh)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/install-prometheus.sh
[ -x scripts/install-chromium.sh ] && bash scripts/install-chromium.sh

if ! command -v docker-compose >/dev/null 2>&1 && ! docker compose version >/dev/null 2>&1; then
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq --no-install-recommends docker-compose >/dev/null
fi
