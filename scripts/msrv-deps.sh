#!/usr/bin/env bash
# The library's dependencies as a user on its minimum Rust gets them. A scratch package depends on
# `blocking-first` with every feature and declares the library's `rust-version`; Cargo's
# MSRV-aware resolver (`incompatible-rust-versions = "fallback"`, what Cargo 1.84 and later do for
# such a package) locks its graph. Then no package in that graph, on any platform, may declare a
# newer Rust than the library, and the library must build with it. (The newest releases of some
# dependencies do ask for more: this checks that a release that does not is there to pick.)
# Prints each package's declared `rust-version`.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

# "1.75" -> "1.75.0"; "1.71.1" stays.
full() { case "$1" in *.*.*) echo "$1" ;; *.*) echo "$1.0" ;; *) echo "$1.0.0" ;; esac; }
# Whether version $1 is newer than version $2.
newer() { [ "$(full "$1")" != "$(full "$2")" ] &&
    [ "$(printf '%s\n%s\n' "$(full "$1")" "$(full "$2")" | sort -V | tail -1)" = "$(full "$1")" ]; }

# The `[package]` table's `rust-version` (not `[workspace.package]`'s), the same in all three.
msrv=$(sed -n '/^\[package\]/,/^\[/s/^rust-version = "\(.*\)"/\1/p' Cargo.toml)
for crate in blocking-first-runtime blocking-first-macros; do
    declared=$(sed -n '/^\[package\]/,/^\[/s/^rust-version = "\(.*\)"/\1/p' "$crate/Cargo.toml")
    if [ "$declared" != "$msrv" ]; then
        echo "msrv-deps: $crate declares Rust $declared, blocking-first $msrv"
        exit 1
    fi
done

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
mkdir "$scratch/src"
touch "$scratch/src/lib.rs"
cat > "$scratch/Cargo.toml" <<TOML
[package]
name = "msrv-probe"
version = "0.0.0"
edition = "2021"
rust-version = "$msrv"
publish = false

[dependencies]
blocking-first = { path = "$root", features = ["tracing", "r2d2", "tower", "metrics", "serde"] }

[workspace]
TOML
cd "$scratch"
export CARGO_TARGET_DIR="${MSRV_DEPS_TARGET:-$root/target/msrv-deps}"
CARGO_RESOLVER_INCOMPATIBLE_RUST_VERSIONS=fallback cargo generate-lockfile -q
# What Cargo cannot see: scheduled-thread-pool (under r2d2) declares no `rust-version`, and its
# newest release needs parking_lot 0.13 (Rust 1.95), so the resolver keeps it; its previous one,
# on parking_lot 0.12, is what a user on the minimum Rust pins (README.md, "Versions").
cargo update -q -p scheduled-thread-pool --precise 0.2.7
# Unpacks every package of the graph, for every platform, so its manifest can be read below.
cargo metadata -q --format-version 1 >/dev/null

registry="${CARGO_HOME:-$HOME/.cargo}/registry/src"
failed=0
echo "rust-version of each dependency, as resolved for Rust $msrv:"
while read -r name version rest; do
    # the library's own crates, by path
    case "$rest" in *"(/"*) continue ;; esac
    version=${version#v}
    manifest=$(find "$registry" -maxdepth 3 -path "*/$name-$version/Cargo.toml" | head -1)
    if [ -z "$manifest" ]; then
        echo "msrv-deps: no unpacked source for $name $version"
        exit 1
    fi
    wants=$(sed -n '/^\[package\]/,/^\[/s/^rust-version = "\(.*\)"/\1/p' "$manifest")
    printf '  %-28s %-12s %s\n' "$name" "$version" "${wants:-(none declared)}"
    if [ -n "$wants" ] && newer "$wants" "$msrv"; then
        echo "msrv-deps: $name $version asks for Rust $wants, more than the library's $msrv"
        failed=1
    fi
done < <(
    for target in x86_64-unknown-linux-gnu aarch64-apple-darwin x86_64-pc-windows-msvc; do
        cargo tree -q -e normal,build --target "$target" --prefix none --format '{p}'
    done | sed 's/ (\*)$//' | sort -u
)
[ "$failed" = 0 ]

cargo check -q
echo "msrv-deps: every dependency fits Rust $msrv, and the library builds with them"
