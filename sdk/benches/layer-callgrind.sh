#!/usr/bin/env bash
# Instructions per request that tracewire's server layer adds to a hello-world
# tower service, counted by callgrind over all threads (export thread included;
# stable on a noisy machine, unlike times):
#   bash sdk/benches/layer-callgrind.sh [top]
# (builds the layer_count bench first). Runs 5000 requests bare and behind the
# layer, without and with a traceparent header, every span delivered (the bench
# fails otherwise), and divides the differences; quanta's clock calibration, whose count varies from run to run, is
# subtracted from both. With `top`, also lists the functions the layered run
# spends most in (inclusive, per request).
set -euo pipefail
cd "$(dirname "$0")/../.."
bin=$(cargo bench -p tracewire --features tower --bench layer_count --no-run \
    --message-format=json 2>/dev/null \
    | grep -o '"executable":"[^"]*layer_count-[^"]*"' | head -1 | cut -d'"' -f4)
n=5000
keep=$(mktemp)
count() { # mode -> instructions
    local out
    out=$(mktemp)
    TRACEWIRE_LAYER_COUNT_MODE=$1 TRACEWIRE_LAYER_COUNT_REQUESTS=$n valgrind --tool=callgrind \
        --log-file=/dev/null --callgrind-out-file="$out" "$bin" >&2 \
        || { echo "layer_count failed: $1" >&2; exit 1; }
    callgrind_annotate --inclusive=yes "$out" 2>/dev/null | awk '
        /PROGRAM TOTALS/ { gsub(",", "", $1); total = $1 }
        /quanta::Clock::new \[/ && !seen { gsub(",", "", $1); calib = $1; seen = 1 }
        END { print total - calib }'
    if [ "$1" = layer ]; then cp "$out" "$keep"; fi
    rm -f "$out"
}
bare=$(count bare)
layer=$(count layer)
echo "bare service: $(( bare / n )) instructions per request"
echo "behind TraceLayer: $(( layer / n )) instructions per request"
echo "the layer adds $(( (layer - bare) / n )) instructions per request (no trace header)"
bare_tp=$(count bare_traceparent)
layer_tp=$(count layer_traceparent)
echo "the layer adds $(( (layer_tp - bare_tp) / n )) instructions per request with a" \
    "traceparent header (bare: $(( bare_tp / n )))"
if [ "${1:-}" = top ]; then
    callgrind_annotate --inclusive=yes --threshold=99 "$keep" 2>/dev/null \
        | awk -v n="$n" '/^ *[0-9,]+ .*\(/ { c = $1; gsub(",", "", c); if (c / n >= 40) {
            $1 = ""; printf "%8d %s\n", c / n, substr($0, 1, 160) } }' | head -70
fi
rm -f "$keep"
