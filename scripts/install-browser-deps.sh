#!/usr/bin/env bash
# Installs what the browser tests (crates/stripe-sandbox/tests/sandbox/browser.rs) need:
# Debian's Chromium at /usr/bin/chromium and playwright-core from the lockfile.
# Safe to run again: each step is skipped when its result is already there.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
browser_dir="$root/crates/stripe-sandbox/tests/browser"

# apt needs root; a newcomer's machine may need sudo.
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  sudo="sudo"
fi

# Chromium from Debian (Playwright's own browser download is not used).
if [ ! -x /usr/bin/chromium ]; then
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get update
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y chromium
fi

# playwright-core, exactly as package-lock.json pins it.
if [ ! -d "$browser_dir/node_modules/playwright-core" ]; then
  if ! command -v npm >/dev/null; then
    echo "install-browser-deps: npm is missing (install Node.js 20 or later)" >&2
    exit 1
  fi
  (cd "$browser_dir" && npm ci --no-audit --no-fund)
fi

echo "browser test dependencies: $(/usr/bin/chromium --version 2>/dev/null), playwright-core $(node -p "require('$browser_dir/node_modules/playwright-core/package.json').version")"
