#!/usr/bin/env bash
# Install a headless browser for the interactive-page tests: Debian's chromium and its driver
# (/usr/bin/chromium, /usr/bin/chromedriver) through apt-get. Nothing downloads a browser from
# elsewhere (the tests give selenium both paths, so its own driver manager never runs).
# Does nothing when both are present; prints one line and exits 0 when it cannot install
# (no apt-get, not root): the browser tests are then skipped with that reason.
set -euo pipefail
if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then
  echo "install_browser: chromium and chromedriver already installed"
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "install_browser: no apt-get here; browser tests will be skipped" >&2
  exit 0
fi
SUDO=""
if [ "$(id -u)" != 0 ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then SUDO="sudo -n"; else
    echo "install_browser: not root and no sudo; browser tests will be skipped" >&2
    exit 0
  fi
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null
echo "install_browser: $(/usr/bin/chromium --version 2>/dev/null || echo chromium installed)"
