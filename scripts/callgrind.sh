#!/usr/bin/env bash
# CPU cost per call as instruction counts: runs each variant of `benches/hops.rs` under
# `valgrind --tool=callgrind` with two numbers of calls and divides the difference, so runtime
# start-up and shutdown cancel out. Counts instructions of every thread of the process; unlike
# times, they do not move with the machine's load. They still move a little with how threads
# happen to be scheduled (how often a pool thread parks and is woken), so each variant is run
# three times: the median and the range are printed.
#
#   scripts/callgrind.sh                       # the default rows
#   scripts/callgrind.sh no_region io_round_trip
set -euo pipefail
cd "$(dirname "$0")/.."

command -v valgrind >/dev/null || { echo "callgrind: valgrind is not installed"; exit 1; }
variants=("$@")
if [ ${#variants[@]} -eq 0 ]; then
    variants=(spawn_blocking no_region no_region_capped io_round_trip io_without_suspension
              nested_1 nested_2 format_annotated format_plain quick_await_10 quick_await_10_plain)
fi
few=200
many=1200

bin=$(cargo bench --bench hops --no-run --message-format=json 2>/dev/null |
      sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -1)
[ -x "$bin" ] || { echo "callgrind: could not build the hops bench"; exit 1; }

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
instructions() { # variant calls
    valgrind --tool=callgrind --callgrind-out-file="$out/cg.$1.$2" "$bin" --calls "$1" "$2" \
        >/dev/null 2>&1
    sed -n 's/^summary: //p' "$out/cg.$1.$2"
}

echo "| variant | instructions per call (median of 3) | range |"
echo "|---|---:|---:|"
for variant in "${variants[@]}"; do
    runs=()
    for _ in 1 2 3; do
        a=$(instructions "$variant" "$few")
        b=$(instructions "$variant" "$many")
        runs+=($(( (b - a) / (many - few) )))
    done
    sorted=($(printf '%s\n' "${runs[@]}" | sort -n))
    echo "| \`$variant\` | ${sorted[1]} | ${sorted[0]}–${sorted[2]} |"
done
