#!/usr/bin/env bash
# Instructions per delivered sampled span, tracewire against opentelemetry_sdk,
# counted by callgrind over all threads, export thread included, and split
# between the thread that makes the spans and the export pipeline's (stable on
# a noisy machine, unlike times):
#   bash sdk/benches/span-callgrind.sh
# (builds the span_count bench first). Each library runs 20000 spans of
# span.rs's span_lifecycle shape to a counting batch exporter, flushed every 256
# spans so that nothing is dropped (the bench fails unless all are delivered);
# a 0-span run of each (provider built and shut down) is subtracted, and so is
# quanta's clock calibration, whose count varies from run to run.
set -euo pipefail
cd "$(dirname "$0")/../.."
bin=$(cargo bench -p tracewire --bench span_count --no-run --message-format=json 2>/dev/null \
    | grep -o '"executable":"[^"]*span_count-[^"]*"' | head -1 | cut -d'"' -f4)
n=20000
count() { # library spans -> "instructions-on-the-span's-thread instructions-on-the-others"
    local dir
    dir=$(mktemp -d)
    # The bench's own output (spans delivered, dropped) goes to stderr;
    # valgrind's, nowhere. One profile per thread: thread 1 is the one that
    # starts and ends the spans, the others are the export pipeline's.
    TRACEWIRE_SPAN_COUNT_LIB=$1 TRACEWIRE_SPAN_COUNT_SPANS=$2 valgrind --tool=callgrind \
        --separate-threads=yes --log-file=/dev/null --callgrind-out-file="$dir/cg" "$bin" >&2 \
        || { echo "span_count failed: $1 $2 spans" >&2; exit 1; }
    local main=0 others=0 t f
    for f in "$dir"/cg-*; do
        # Less quanta's calibration (tracewire's clock, once per process), which
        # runs until its readings agree and so costs a different count each run:
        # it would swamp the difference between runs.
        t=$(callgrind_annotate --inclusive=yes "$f" 2>/dev/null | awk '
            /PROGRAM TOTALS/ { gsub(",", "", $1); total = $1 }
            /quanta::Clock::new \[/ && !seen { gsub(",", "", $1); calib = $1; seen = 1 }
            END { print total - calib }')
        case "$f" in
            *-01) main=$t ;;
            *) others=$(( others + t )) ;;
        esac
    done
    rm -rf "$dir"
    echo "$main $others"
}
declare -A per
for lib in tracewire opentelemetry_sdk; do
    read -r main others < <(count "$lib" "$n")
    read -r main0 others0 < <(count "$lib" 0)
    span_thread=$(( (main - main0) / n ))
    export_threads=$(( (others - others0) / n ))
    per[$lib]=$(( span_thread + export_threads ))
    echo "$lib: ${per[$lib]} instructions per delivered span: ${span_thread} on the span's" \
        "thread, ${export_threads} on the export pipeline's ($n spans, less a 0-span run)"
done
# Issue 10 asks for tracewire <= 1/5 of opentelemetry_sdk.
awk -v t="${per[tracewire]}" -v o="${per[opentelemetry_sdk]}" 'BEGIN {
    printf "tracewire / opentelemetry_sdk: %.3f (1/%.2f)\n", t / o, o / t
}'
