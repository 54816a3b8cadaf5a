#!/usr/bin/env sh
# System packages the project's tests need beyond Python: Debian's headless Chromium and its
# driver, for the docs site's browser test (tests/test_docs_site.py). Installs them with apt-get
# (through sudo when not root) only when they are missing; on other systems it says what to do.
set -eu
if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "scripts/system-deps.sh: chromium and chromedriver are missing and apt-get is not" \
        "available: install Chromium and ChromeDriver with your system's package manager" >&2
    exit 1
fi
run=""
[ "$(id -u)" -eq 0 ] || run="sudo"
$run apt-get update -qq
DEBIAN_FRONTEND=noninteractive $run apt-get install -y -qq chromium chromium-driver >/dev/null
