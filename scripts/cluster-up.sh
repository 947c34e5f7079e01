#!/usr/bin/env bash
# From a fresh Debian 12 machine to a running local Tally cluster: installs dependencies, builds,
# and starts ZooKeeper plus a PostgreSQL leader/replica pair per shard on 127.0.0.1.
# Usage: scripts/cluster-up.sh [DIR] [extra tallyctl flags, e.g. --shards 4 --base-port 17000]
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=${1:-/var/tmp/tally-cluster}
shift || true
BUILD_DIR=${BUILD_DIR:-build}

bash scripts/install-deps.sh
cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo
ninja -C "$BUILD_DIR" tallyctl
"$BUILD_DIR/bin/tallyctl" cluster up --dir "$DIR" --config config/local-cluster.yaml "$@"
