#!/usr/bin/env bash
# Builds the runtime crate with its dependencies resolved at the lowest versions its manifests
# declare (tokio, tracing, r2d2, tower, http, metrics, serde), so a floor that no longer builds fails CI instead of forcing an
# upgrade on users: a scratch copy of the crate, standalone, `cargo update --precise` to each
# floor, then `cargo check` with every feature and with none.
set -euo pipefail
cd "$(dirname "$0")/.."

# `name = { version = "X" ...` or `name = "X"` in a manifest, first match.
floor() { sed -n "s/^$1 = .*version = \"\([^\"]*\)\".*/\1/p; s/^$1 = \"\([^\"]*\)\"/\1/p" "$2" | head -1; }
# "1.30" -> "1.30.0"; "0.1.26" stays.
full() { case "$1" in *.*.*) echo "$1" ;; *.*) echo "$1.0" ;; *) echo "$1.0.0" ;; esac; }

tokio=$(floor tokio Cargo.toml)
tracing=$(floor tracing Cargo.toml)
r2d2=$(floor r2d2 blocking-first-runtime/Cargo.toml)
tower_layer=$(floor tower-layer blocking-first-runtime/Cargo.toml)
tower_service=$(floor tower-service blocking-first-runtime/Cargo.toml)
http=$(floor http blocking-first-runtime/Cargo.toml)
pin_project_lite=$(floor pin-project-lite blocking-first-runtime/Cargo.toml)
metrics=$(floor metrics blocking-first-runtime/Cargo.toml)
serde=$(floor serde blocking-first-runtime/Cargo.toml)
# the edition the runtime is published with
edition=$(sed -n 's/^edition = "\(.*\)"/\1/p' blocking-first-runtime/Cargo.toml)
echo "floors: tokio $tokio, tracing $tracing, r2d2 $r2d2, tower-layer $tower_layer," \
    "tower-service $tower_service, http $http, pin-project-lite $pin_project_lite," \
    "metrics $metrics, serde $serde"

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
cp -r blocking-first-runtime/src "$scratch/src"
cat > "$scratch/Cargo.toml" <<TOML
[package]
name = "blocking-first-runtime"
version = "0.0.0"
edition = "$edition"
publish = false

[features]
default = ["tracing"]
tracing = ["dep:tracing"]
r2d2 = ["dep:r2d2"]
tower = ["dep:tower-layer", "dep:tower-service", "dep:http", "dep:pin-project-lite"]
metrics = ["dep:metrics"]
serde = ["dep:serde"]

[dependencies]
tokio = { version = "$tokio", default-features = false, features = ["rt", "sync"] }
tracing = { version = "$tracing", default-features = false, features = ["std"], optional = true }
r2d2 = { version = "$r2d2", optional = true }
tower-layer = { version = "$tower_layer", optional = true }
tower-service = { version = "$tower_service", optional = true }
http = { version = "$http", optional = true }
pin-project-lite = { version = "$pin_project_lite", optional = true }
metrics = { version = "$metrics", optional = true }
serde = { version = "$serde", features = ["derive"], optional = true }

[lints.rust]
unexpected_cfgs = { level = "allow" }
TOML
cd "$scratch"
export CARGO_TARGET_DIR="${MIN_VERSIONS_TARGET:-$OLDPWD/target/min-versions}"
cargo generate-lockfile -q
cargo update -q -p tokio --precise "$(full "$tokio")"
cargo update -q -p tracing --precise "$(full "$tracing")"
cargo update -q -p r2d2 --precise "$(full "$r2d2")"
cargo update -q -p tower-layer --precise "$(full "$tower_layer")"
cargo update -q -p tower-service --precise "$(full "$tower_service")"
cargo update -q -p http --precise "$(full "$http")"
cargo update -q -p pin-project-lite --precise "$(full "$pin_project_lite")"
cargo update -q -p metrics --precise "$(full "$metrics")"
cargo update -q -p serde --precise "$(full "$serde")"
cargo update -q -p serde_derive --precise "$(full "$serde")"
cargo tree -q -e normal --all-features --depth 1 | grep -E "tokio|tracing|r2d2|tower|http|pin-project|metrics|serde" | sed 's/^/  resolved: /'
cargo check -q --all-features
cargo check -q --no-default-features
echo "min-versions: the runtime builds at its declared floors"
