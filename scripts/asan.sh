#!/usr/bin/env bash
# AddressSanitizer over the tests that exercise the runtime's unsafe code and protocols: the
# composition stress harness, the driver, `parallel`, shutdown, stress, the soundness regressions,
# nested bodies and the executor. `.ci/run` runs it. Needs a nightly toolchain
# (`-Zsanitizer` is unstable); without one it says so and exits 0.
#
#   scripts/asan.sh            # the default set
#   scripts/asan.sh --test parallel
set -euo pipefail
cd "$(dirname "$0")/.."

if ! cargo +nightly --version >/dev/null 2>&1; then
    echo "asan: no nightly toolchain here (rustup toolchain install nightly), skipping"
    exit 0
fi

target="$(rustc -vV | sed -n 's/^host: //p')"
tests=("$@")
if [ ${#tests[@]} -eq 0 ]; then
    tests=(--test compose_stress --test driver --test parallel --test shutdown --test stress
           --test soundness --test executor --test executor_edges --test nested --test cancellation)
fi

# Leak checks stay off: runtimes that tests shut down in the background keep threads (and their
# allocations) past the end of `main`, which LeakSanitizer would report as leaks.
export ASAN_OPTIONS="detect_leaks=0:abort_on_error=1"
export RUSTFLAGS="-Zsanitizer=address"
export RUSTDOCFLAGS="-Zsanitizer=address"
export RUST_BACKTRACE=0
echo "asan: cargo +nightly test -p blocking-first-tests --target $target ${tests[*]}"
cargo +nightly test -p blocking-first-tests --target "$target" --target-dir target/asan "${tests[@]}"
echo "asan: clean"
