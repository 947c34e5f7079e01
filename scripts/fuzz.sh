#!/usr/bin/env bash
# Builds a libFuzzer target with clang-14, ASan and UBSan in its own tree (build-fuzz) and runs it
# for N seconds on a scratch copy of its seed corpus, so the checked-in corpus never changes.
# Fails on any crash, leak, timeout or sanitizer report; the reproducer is kept and its path printed.
# Usage: scripts/fuzz.sh [seconds=60] [target=pgwire_decoder_fuzz]
#   Reproduce a finding: build-fuzz/bin/<target> <crash-file>
set -euo pipefail
cd "$(dirname "$0")/.."
RUN_SECONDS=${1:-60}
TARGET=${2:-pgwire_decoder_fuzz}
BUILD_DIR=${BUILD_DIR:-build-fuzz}

case "$TARGET" in
  pgwire_decoder_fuzz) CORPUS=tests/fuzz/corpus/pgwire ;;
  *) echo "fuzz: unknown target $TARGET" >&2; exit 2 ;;
esac

for tool in clang-14 clang++-14; do
  command -v "$tool" >/dev/null || { echo "fuzz: $tool missing: run scripts/install-deps.sh" >&2; exit 2; }
done

# -O1 without -DNDEBUG: the asserts in Result<T> stay live while fuzzing.
CC=clang-14 CXX=clang++-14 cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g" -DTALLY_FUZZ=ON -DTALLY_ASAN=ON >/dev/null
ninja -C "$BUILD_DIR" "$TARGET"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/tally-fuzz.XXXXXX")
mkdir -p "$WORK/corpus" "$WORK/artifacts"
cp "$CORPUS"/* "$WORK/corpus/"
echo "fuzz: $TARGET for ${RUN_SECONDS}s, $(ls "$WORK/corpus" | wc -l) seeds, work dir $WORK"

export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:symbolize=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
set +e
"$BUILD_DIR/bin/$TARGET" "$WORK/corpus" -max_total_time="$RUN_SECONDS" -detect_leaks=1 \
  -timeout=10 -print_final_stats=1 -artifact_prefix="$WORK/artifacts/" 2>&1 | tee "$WORK/fuzz.log"
status=${PIPESTATUS[0]}
set -e

execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$WORK/fuzz.log" | grep -o '[0-9]*$' || true)
findings=$(ls -A "$WORK/artifacts")
if [ "$status" -ne 0 ] || [ -n "$findings" ] ||
   grep -qE 'ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:|SUMMARY: UndefinedBehavior' "$WORK/fuzz.log"; then
  echo "fuzz: FAILED (exit $status) after ${execs:-?} executions; reproducers in $WORK/artifacts:" >&2
  ls -l "$WORK/artifacts" >&2
  exit 1
fi
echo "fuzz: OK, ${execs:-?} executions in ${RUN_SECONDS}s, corpus grew to $(ls "$WORK/corpus" | wc -l) inputs"
rm -rf "$WORK"
