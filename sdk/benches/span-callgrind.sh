#!/usr/bin/env bash
# Instructions per delivered sampled span, tracewire against opentelemetry_sdk,
# counted by callgrind over all threads, export thread included (stable on a
# noisy machine, unlike times):
#   bash sdk/benches/span-callgrind.sh
# (builds the span_count bench first). Each library runs 20000 spans of
# span.rs's span_lifecycle shape to a counting batch exporter, flushed every 256
# spans so that nothing is dropped (the bench fails unless all are delivered);
# a 0-span run of each (provider built and shut down) is subtracted, and so is
# quanta's clock calibration, whose count varies from run to run. Callgrind's
# PROGRAM TOTALS sum every thread (--separate-threads=no, the default).
set -euo pipefail
cd "$(dirname "$0")/../.."
bin=$(cargo bench -p tracewire --bench span_count --no-run --message-format=json 2>/dev/null \
    | grep -o '"executable":"[^"]*span_count-[^"]*"' | head -1 | cut -d'"' -f4)
n=20000
count() { # library spans -> instructions
    local out
    out=$(mktemp)
    # The bench's own output (spans delivered, dropped) goes to stderr;
    # valgrind's, nowhere.
    TRACEWIRE_SPAN_COUNT_LIB=$1 TRACEWIRE_SPAN_COUNT_SPANS=$2 valgrind --tool=callgrind \
        --log-file=/dev/null --callgrind-out-file="$out" "$bin" >&2 \
        || { echo "span_count failed: $1 $2 spans" >&2; exit 1; }
    # Less quanta's calibration (tracewire's clock, once per process), which
    # runs until its readings agree and so costs a different count each run:
    # it would swamp the difference between runs.
    callgrind_annotate --inclusive=yes "$out" 2>/dev/null | awk '
        /PROGRAM TOTALS/ { gsub(",", "", $1); total = $1 }
        /quanta::Clock::new \[/ && !seen { gsub(",", "", $1); calib = $1; seen = 1 }
        END { print total - calib }'
    rm -f "$out"
}
declare -A per
for lib in tracewire opentelemetry_sdk; do
    total=$(count "$lib" "$n")
    base=$(count "$lib" 0)
    per[$lib]=$(( (total - base) / n ))
    echo "$lib: ${per[$lib]} instructions per delivered span ($total - $base over $n spans)"
done
# Issue 10 asks for tracewire <= 1/5 of opentelemetry_sdk.
awk -v t="${per[tracewire]}" -v o="${per[opentelemetry_sdk]}" 'BEGIN {
    printf "tracewire / opentelemetry_sdk: %.3f (1/%.2f)\n", t / o, o / t
}'
