#!/usr/bin/env bash
# Builds the whole tree with a sanitizer in its own directory and runs the unit tier plus the
# integration tests labelled `sanitize` in it; the servers those tests start are the sanitized
# binaries too. Fails on a failed test and on any sanitizer report, also one written by a server
# whose test passed (reports go to files, see REPORTS below, and are printed).
# Usage: scripts/sanitize.sh [asan|tsan]   asan = AddressSanitizer + UBSan (the CI tier);
#        SAN_BUILD_DIR overrides the tree (build-asan / build-tsan).
set -euo pipefail
cd "$(dirname "$0")/.."
KIND=${1:-asan}

case "$KIND" in
  # -O0: the fastest to compile, and the clearest stacks.
  asan) BUILD_DIR=${SAN_BUILD_DIR:-build-asan}; FLAGS=(-DCMAKE_BUILD_TYPE=Debug -DTALLY_ASAN=ON) ;;
  tsan) BUILD_DIR=${SAN_BUILD_DIR:-build-tsan}; FLAGS=(-DCMAKE_BUILD_TYPE=RelWithDebInfo -DTALLY_TSAN=ON) ;;
  *) echo "sanitize: unknown kind '$KIND' (expected asan or tsan)" >&2; exit 2 ;;
esac

LABELS='^(unit|sanitize)$'
cmake -S . -B "$BUILD_DIR" -G Ninja "${FLAGS[@]}" -DTALLY_WERROR=ON >/dev/null
# Only what this tier runs: the binaries of its tests and the servers that tallyctl starts from
# its own directory. Chaos tests, benchmarks and the other integration tests are not built here:
# a sanitized tree is slow to compile, and CI builds this one from a cold cache.
mapfile -t TIER_TESTS < <(cd "$BUILD_DIR" && ctest -N -L "$LABELS" | awk '/Test +#[0-9]+:/ {print $3}')
declare -A IS_TARGET=()
while read -r t; do IS_TARGET[$t]=1; done < <(ninja -C "$BUILD_DIR" -t targets all |
  sed -n 's/^\([A-Za-z0-9_]*\): phony$/\1/p')
TARGETS=(tallyctl shard_proxy cluster_proxy processor config_service loadgen)
for t in "${TIER_TESTS[@]}"; do
  # Script tests (compose_files_check) have no target of their own.
  if [ -n "${IS_TARGET[$t]:-}" ]; then TARGETS+=("$t"); fi
done
echo "sanitize: building ${#TARGETS[@]} targets: ${TARGETS[*]}"
ninja -C "$BUILD_DIR" "${TARGETS[@]}"

REPORTS=$(cd "$BUILD_DIR" && pwd)/sanitizer-reports
rm -rf "$REPORTS"
mkdir -p "$REPORTS"
# As root, tallyctl runs the servers as the `tally` account: they must be able to write here too.
chmod 1777 "$REPORTS"
# log_path: every instrumented process (test binaries, servers, tallyctl) writes its report to
# $REPORTS/{asan,ubsan,tsan}.<pid>, so a server's report is seen even when it does not fail its test.
export ASAN_OPTIONS="detect_leaks=1:halt_on_error=1:log_path=$REPORTS/asan"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:log_path=$REPORTS/ubsan"
export TSAN_OPTIONS="halt_on_error=1:second_deadlock_stack=1:log_path=$REPORTS/tsan"

set +e
(cd "$BUILD_DIR" && ctest --output-on-failure -j2 -L "$LABELS")
status=$?
set -e

if [ -n "$(ls -A "$REPORTS")" ]; then
  for f in "$REPORTS"/*; do
    echo "===== sanitizer report $f" >&2
    cat "$f" >&2
  done
  echo "sanitize: $KIND: $(ls "$REPORTS" | wc -l) sanitizer report(s) above" >&2
  exit 1
fi
if [ "$status" -ne 0 ]; then
  echo "sanitize: $KIND: tests failed (ctest exit $status)" >&2
  exit "$status"
fi
echo "sanitize: $KIND: unit and sanitize-labelled tests passed, no sanitizer reports"
