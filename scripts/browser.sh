#!/usr/bin/env bash
# The portal's browser test (tests/test_portal_browser.py) drives Debian's chromium with
# Playwright, which cannot download its own browser here (no internet). `make test` runs this
# first: a no-op once /usr/bin/chromium exists; else it installs Debian's package where
# apt-get can (root), and otherwise says why the browser test will be skipped.
set -euo pipefail
if [[ -x /usr/bin/chromium ]]; then
    exit 0
fi
if command -v apt-get >/dev/null && [[ $(id -u) == 0 ]]; then
    echo "browser: installing Debian's chromium for the portal's browser test"
    apt-get install -y chromium >/dev/null 2>&1 \
        || { apt-get update >/dev/null && apt-get install -y chromium >/dev/null; }
else
    echo "browser: installing chromium needs root and apt-get; the portal's browser test will be skipped" >&2
fi
