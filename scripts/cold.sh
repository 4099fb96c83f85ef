#!/usr/bin/env bash
# Cold timings of the README's two commands, two commits interleaved round by round: each run is a
# fresh clone with an empty target dir (the cargo registry stays warm).
#
#   scripts/cold.sh notes OLD NEW [ROUNDS]   # `cargo run --example notes` until /status answers
#   scripts/cold.sh test OLD NEW [ROUNDS]    # `cargo test --workspace`
set -u
what=$1 old=$2 new=$3 rounds=${4:-2}
repo=$(cd "$(dirname "$0")/.." && pwd)
for round in $(seq 1 "$rounds"); do
    for rev in "$old" "$new"; do
        dir=$(mktemp -d)/fresh
        git clone -q "$repo" "$dir" && git -C "$dir" checkout -q "$rev"
        cd "$dir" || exit 1
        start=$(date +%s.%N)
        if [ "$what" = notes ]; then
            cargo run --example notes >"$dir.log" 2>&1 &
            pid=$!
            until curl -sf http://127.0.0.1:3000/status >/dev/null 2>&1; do
                sleep 0.2
                kill -0 "$pid" 2>/dev/null || { echo "round $round $rev: exited"; break; }
            done
            outcome=served
            kill "$pid" 2>/dev/null; sleep 1; pkill -f "target/debug/examples/notes"; sleep 1
        else
            RUST_BACKTRACE=0 cargo test --workspace >"$dir.log" 2>&1 && outcome=passed || outcome=failed
        fi
        end=$(date +%s.%N)
        echo "round $round $rev: $outcome after $(echo "$end - $start" | bc) s"
        cd / && rm -rf "$(dirname "$dir")"
    done
done
