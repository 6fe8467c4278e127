#!/usr/bin/env bash
# Headless Chromium for tests/test_e2e_browser.py (driven by Playwright for Python with
# executable_path=/usr/bin/chromium). Debian's package, not `playwright install`.
# Safe to run again: does nothing when chromium is already installed.
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then
    echo "chromium already installed: $(chromium --version 2>/dev/null || echo unknown version)"
    exit 0
fi
SUDO=""
if [ "$(id -u)" != "0" ] && command -v sudo >/dev/null 2>&1; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update
$SUDO apt-get install -y chromium
chromium --version || true
