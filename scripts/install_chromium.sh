#!/bin/sh
# Install headless Chromium from the distribution's packages (Debian/Ubuntu), for the report's browser test
# (tests/test_report.py::test_report_renders_in_chromium, marked slow). Needs root (or sudo).
# Never run at import time or by the tests themselves: run it once, by hand or in CI.
set -eu
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then
    echo "chromium is already installed: $(command -v chromium || command -v chromium-browser)"
    exit 0
fi
$SUDO apt-get update
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends chromium fonts-dejavu-core
chromium --version
