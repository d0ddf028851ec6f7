#!/usr/bin/env bash
# Install what ztproxy needs to build and test (Debian 12, as root), then build.
#   tools/setup.sh            install missing packages, build ./build
#   tools/setup.sh --no-build install only
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(
  build-essential cmake pkg-config clang libclang-rt-14-dev
  libssl-dev libevent-dev libjansson-dev libcmocka-dev libcurl4-openssl-dev libcjose-dev
  libmaxminddb-dev libmaxmind-db-writer-perl
  openssl curl python3 ca-certificates cppcheck
  haproxy python3-yaml
  libhiredis-dev redis-server
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup: missing packages: ${missing[*]} (run as root to install them)" >&2
    exit 1
  fi
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The development OpenID provider (deploy/dev-idp) runs on Node.js.
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup: node and npm are missing (run as root to install them)" >&2
    exit 1
  fi
  echo "setup: installing nodejs npm"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
fi
idp=deploy/dev-idp
if [ ! -f "$idp/node_modules/.package-lock.json" ] ||
   ! cmp -s "$idp/package-lock.json" "$idp/node_modules/.ztproxy-lock"; then
  echo "setup: npm ci in $idp"
  (cd "$idp" && npm ci --omit=dev --no-audit --no-fund --loglevel=error >/dev/null)
  cp "$idp/package-lock.json" "$idp/node_modules/.ztproxy-lock"
fi
# Offline validators of the deployment files (deploy/validate, docs/deploy.md).
val=deploy/validate
if [ ! -f "$val/node_modules/.package-lock.json" ] ||
   ! cmp -s "$val/package-lock.json" "$val/node_modules/.ztproxy-lock"; then
  echo "setup: npm ci in $val"
  (cd "$val" && npm ci --omit=dev --no-audit --no-fund --loglevel=error >/dev/null)
  cp "$val/package-lock.json" "$val/node_modules/.ztproxy-lock"
fi

# The console's browser tests (tests/browser): Debian's chromium, driven
# headless by playwright-core (pinned, npm ci; it downloads no browser).
if ! dpkg-query -W -f='${Status}' chromium 2>/dev/null | grep -q "install ok installed" ||
   ! dpkg-query -W -f='${Status}' fonts-dejavu-core 2>/dev/null | grep -q "install ok installed"; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup: chromium and fonts-dejavu-core are missing (run as root to install them)" >&2
    exit 1
  fi
  echo "setup: installing chromium fonts-dejavu-core"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
fi
btest=tests/browser
if [ ! -f "$btest/node_modules/.package-lock.json" ] ||
   ! cmp -s "$btest/package-lock.json" "$btest/node_modules/.ztproxy-lock"; then
  echo "setup: npm ci in $btest"
  (cd "$btest" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
  cp "$btest/package-lock.json" "$btest/node_modules/.ztproxy-lock"
fi

if [ "${1:-}" != "--no-build" ]; then
  cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
  cmake --build build -j"$(nproc)"
fi
