#!/usr/bin/env bash
# Installs everything Tally needs to build, test and run a local cluster, from Debian 12's packages.
# Idempotent: packages already installed are skipped, so a second run does no network I/O.
# Run as root (or with sudo available).
set -euo pipefail

# `install-deps.sh --build`: only what compiling the binaries needs (the Dockerfile's build stage).
BUILD_PACKAGES=(
  # toolchain
  build-essential cmake ninja-build ccache pkg-config git
  # libraries
  libpqxx-dev libpq-dev libboost-dev libboost-system-dev libzookeeper-mt-dev libyaml-cpp-dev
  googletest libgtest-dev libgmock-dev nlohmann-json3-dev libxxhash-dev libssl-dev
  # the processor's event parser (POST /v1/events): simdjson, several times nlohmann's speed
  libsimdjson-dev
  # the real PostgreSQL parser for the cluster proxy's analyst SQL planner; pg_query.h includes
  # protobuf-c's header, which libpg-query-dev does not depend on
  libpg-query-dev libprotobuf-c-dev
)
PACKAGES=(
  "${BUILD_PACKAGES[@]}"
  clang-format clang-tidy
  # servers the local cluster and the tests run for real
  postgresql-15 postgresql-client-15 zookeeper libslf4j-java default-jre-headless
  # process tools used by tallyctl and the tests
  procps curl
  # client drivers the analyst SQL integration test runs against the cluster proxy, since each
  # speaks the PostgreSQL protocol differently: JDBC (extended protocol, binary results; run with
  # the JDK's `java File.java`) and psycopg2 (simple protocol, client-side parameters)
  libpostgresql-jdbc-java default-jdk-headless python3-psycopg2
  # benchmarks (tests/bench/*: pgbouncer is the shard proxy's anchor, wrk drives the cluster proxy;
  # pgbench comes with postgresql-client-15)
  pgbouncer libbenchmark-dev wrk
  # fuzzing (scripts/fuzz.sh: libFuzzer and the sanitizer runtimes)
  clang-14 libclang-rt-14-dev
  # tests/compose/check_compose.sh validates docker-compose.yml with `docker-compose config`
  # (Debian's docker-compose v1; it needs no Docker engine for that)
  docker-compose
)
if [ "${1:-}" = "--build" ]; then PACKAGES=("${BUILD_PACKAGES[@]}"); fi

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#PACKAGES[@]} packages already installed"
  exit 0
fi

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# The postgresql package creates and starts a default cluster on systemd machines; Tally never uses
# it (the local cluster runs its own data directories), and on machines without systemd nothing starts.
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
