#!/usr/bin/env bash
# Runs every test tier but `bench`: installs what is missing, builds once (warnings are errors),
# then unit, integration, chaos and fuzz tests against real PostgreSQL and ZooKeeper on loopback,
# then the unit tier and the `sanitize`-labelled integration tests in an ASan/UBSan tree.
# Usage: scripts/test.sh            (from the repository root; BUILD_DIR defaults to build)
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build}

bash scripts/install-deps.sh
cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DTALLY_WERROR=ON
ninja -C "$BUILD_DIR"
cd "$BUILD_DIR"
# Server-backed tests hold the tally_servers resource lock, so -j2 only overlaps unit tests with them.
ctest --output-on-failure -j2 -LE bench
cd - >/dev/null
bash scripts/sanitize.sh asan
