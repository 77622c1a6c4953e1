#!/usr/bin/env bash
# Instructions per traceparent_roundtrip (extract traceparent + tracestate from a
# HeaderMap into a context, inject it into another), tracewire against
# opentelemetry_sdk, counted by callgrind (stable where times are not):
#   bash sdk/benches/propagation-callgrind.sh
# Runs the propagation bench's two roundtrip functions under callgrind with
# criterion's --profile-time (no analysis), and divides the instructions spent
# in each roundtrip function (inclusive) by the number of times it was called.
set -euo pipefail
cd "$(dirname "$0")/../.."
bin=$(cargo bench -p tracewire --bench propagation --no-run --message-format=json 2>/dev/null \
    | grep -o '"executable":"[^"]*propagation-[^"]*"' | head -1 | cut -d'"' -f4)
declare -A per
for lib in tracewire opentelemetry_sdk; do
    fn=${lib%_sdk}_roundtrip
    [ "$lib" = opentelemetry_sdk ] && fn=otel_roundtrip
    out=$(mktemp)
    valgrind --tool=callgrind --log-file=/dev/null --callgrind-out-file="$out" \
        "$bin" --bench "traceparent_roundtrip/$lib\$" --profile-time 2 >/dev/null 2>&1 \
        || { echo "the bench failed under callgrind: $lib" >&2; exit 1; }
    callgrind_annotate --inclusive=yes "$out" >"$out.inclusive" 2>/dev/null
    callgrind_annotate --tree=caller "$out" >"$out.callers" 2>/dev/null
    total=$(awk -v f="propagation::$fn \\[" '$0 ~ f { gsub(",", "", $1); print $1; exit }' "$out.inclusive")
    calls=$(grep -m1 -oE "< sdk/benches/propagation.rs:propagation::$fn \([0-9,]+x\)" "$out.callers" \
        | grep -oE '[0-9,]+x' | tr -d ',x')
    rm -f "$out" "$out.inclusive" "$out.callers"
    per[$lib]=$(( total / calls ))
    echo "$lib: ${per[$lib]} instructions per roundtrip ($total over $calls calls)"
done
awk -v t="${per[tracewire]}" -v o="${per[opentelemetry_sdk]}" 'BEGIN {
    printf "opentelemetry_sdk / tracewire: %.2fx\n", o / t
}'
