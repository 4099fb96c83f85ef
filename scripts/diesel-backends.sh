#!/usr/bin/env bash
# Feature `diesel` with diesel's PostgreSQL and MySQL backends: a scratch package takes a
# `blocking_first::pool::Conn` as `&mut conn` in a query and a transaction on each, and
# `cargo check`s it. (SQLite is tested in `tests/diesel.rs`.) Each backend needs its client
# library's development files (`pg_config`: Debian's libpq-dev; `mysql_config`:
# default-libmysqlclient-dev); a backend whose tool is missing is reported as skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
mkdir "$scratch/src"
cat > "$scratch/Cargo.toml" <<TOML
[package]
name = "diesel-backends-probe"
version = "0.0.0"
edition = "2021"
publish = false

[features]
postgres = ["diesel/postgres"]
mysql = ["diesel/mysql"]

[dependencies]
blocking-first = { path = "$root", features = ["diesel"] }
diesel = { version = "2.4", default-features = false, features = ["r2d2"] }

[workspace]
TOML
cat > "$scratch/src/lib.rs" <<'RUST'
//! `&mut conn` of a `blocking_first::pool::Conn` on diesel's PostgreSQL and MySQL backends.
use blocking_first::pool::Pool;
use diesel::prelude::*;
use diesel::r2d2::ConnectionManager;
use diesel::sql_types::Integer;

pub fn one<C>(db: &Pool<ConnectionManager<C>>) -> QueryResult<i32>
where
    C: diesel::r2d2::R2D2Connection + Connection + Send + 'static,
    blocking_first::pool::Conn<ConnectionManager<C>>: Connection<Backend = C::Backend>,
    diesel::dsl::select<diesel::dsl::AsExprOf<i32, Integer>>:
        diesel::query_dsl::LoadQuery<'static, blocking_first::pool::Conn<ConnectionManager<C>>, i32>,
{
    let mut conn = db.get().expect("a connection");
    conn.transaction(|conn| diesel::select(1.into_sql::<Integer>()).get_result::<i32>(conn))?;
    diesel::select(1.into_sql::<Integer>()).get_result(&mut conn)
}

#[cfg(feature = "postgres")]
pub fn postgres(db: &Pool<ConnectionManager<PgConnection>>) -> QueryResult<i32> {
    one(db)
}

#[cfg(feature = "mysql")]
pub fn mysql(db: &Pool<ConnectionManager<MysqlConnection>>) -> QueryResult<i32> {
    one(db)
}
RUST
cd "$scratch"
export CARGO_TARGET_DIR="${DIESEL_BACKENDS_TARGET:-$root/target/diesel-backends}"
for backend in postgres:pg_config mysql:mysql_config; do
    name=${backend%%:*}
    tool=${backend##*:}
    if ! command -v "$tool" > /dev/null; then
        echo "diesel-backends: $name skipped (no \`$tool\`: its client library is not installed)"
        continue
    fi
    cargo check -q --features "$name"
    echo "diesel-backends: $name checked"
done
