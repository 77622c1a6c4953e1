#!/usr/bin/env bash
# Instructions per run of the heap bench's workload under each allocator, all
# threads, counted by callgrind (stable on a noisy machine, unlike times):
#   bash sdk/benches/heap-callgrind.sh
# (builds the bench first). Prints each mode's total and its ratio to its base
# allocator. 20 runs each, after the process's own start-up (a 0-run baseline
# of each mode is subtracted).
set -euo pipefail
cd "$(dirname "$0")/../.."
bin=$(cargo bench -p tracewire --bench heap --no-run --message-format=json 2>/dev/null \
    | grep -o '"executable":"[^"]*heap-[^"]*"' | head -1 | cut -d'"' -f4)
count() { # mode iterations -> instructions
    local out
    out=$(mktemp)
    conf=prof:false
    [ "$1" = jemalloc_prof ] && conf=prof:true,prof_active:true,lg_prof_sample:19
    TRACEWIRE_HEAP_BENCH=$1 TRACEWIRE_HEAP_ITERS=$2 _RJEM_MALLOC_CONF=$conf \
        valgrind --tool=callgrind --callgrind-out-file="$out" "$bin" >/dev/null 2>&1
    callgrind_annotate "$out" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}'
    rm -f "$out"
}
declare -A per
for m in system tracewire jemalloc tracewire_jemalloc jemalloc_prof; do
    per[$m]=$(( ($(count "$m" 20) - $(count "$m" 0)) / 20 ))
    echo "$m: ${per[$m]} instructions per run"
done
awk -v s="${per[system]}" -v t="${per[tracewire]}" -v j="${per[jemalloc]}" \
    -v tj="${per[tracewire_jemalloc]}" -v jp="${per[jemalloc_prof]}" 'BEGIN {
    printf "tracewire over system: %+.2f %%\n", (t / s - 1) * 100
    printf "tracewire over jemalloc: %+.2f %%\n", (tj / j - 1) * 100
    printf "jemalloc profiling over jemalloc: %+.2f %%\n", (jp / j - 1) * 100
}'
