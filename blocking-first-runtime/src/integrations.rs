//! Integrations with other crates, each behind the feature of that crate's name. The
//! `blocking-first` crate re-exports what is here at its root (`blocking_first::pool`,
//! `blocking_first::tower`).

#[cfg(feature = "r2d2")]
#[path = "pool.rs"]
pub mod pool;

#[cfg(feature = "tower")]
#[path = "shed.rs"]
pub mod tower;
