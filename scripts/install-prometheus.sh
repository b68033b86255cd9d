#!/usr/bin/env bash
# Install `prometheus` and `promtool` from Debian's package when they are missing (idempotent).
# Used by tests/integration/test_deploy_files.py (rule/config checks) and by tests that run a real Prometheus.
# Debian's package would start a system Prometheus on :9090; we keep it from starting (policy-rc.d)
# and stop it if it did start anyway, so the port stays free for the tests' own instance.
set -euo pipefail

if command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1; then
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
        echo "install-prometheus.sh: need root (or sudo) to apt-get install prometheus" >&2
        exit 1
    fi
fi

# Forbid service starts during the install unless a policy already exists (Docker images ship one).
POLICY=/usr/sbin/policy-rc.d
made_policy=0
if [ ! -e "$POLICY" ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$POLICY" >/dev/null
    $SUDO chmod 755 "$POLICY"
    made_policy=1
fi
cleanup() { if [ "$made_policy" -eq 1 ]; then $SUDO rm -f "$POLICY"; fi; }
trap cleanup EXIT

export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends prometheus >/dev/null

# Belt and braces: if a system service came up anyway, stop it and keep it from starting at boot.
if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
    $SUDO systemctl disable --now prometheus >/dev/null 2>&1 || true
else
    $SUDO service prometheus stop >/dev/null 2>&1 || true
    $SUDO update-rc.d prometheus disable >/dev/null 2>&1 || true
fi
# Any remaining daemon started by the package runs as user "prometheus" from /usr/bin/prometheus.
for pid in $(pgrep -u prometheus -x prometheus 2>/dev/null || true); do
    $SUDO kill "$pid" 2>/dev/null || true
done

command -v promtool >/dev/null
echo "install-prometheus.sh: $(prometheus --version 2>&1 | head -1)"
