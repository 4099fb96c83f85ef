//! The `#[blocking_first]` attribute. Use it through the [`blocking-first`] crate, whose docs
//! describe what it does and show its expansion.
//!
//! [`blocking-first`]: https://docs.rs/blocking-first

mod args;
mod expand;
#[cfg(test)]
mod fuzz;
mod parallel;
mod regions;
mod signature;
#[cfg(test)]
mod snapshots;

use proc_macro::TokenStream;

/// Runs an `async fn`'s body as blocking code on tokio's blocking pool, with `io! { }` regions
/// on the runtime and `parallel! { }` branches side by side. See the `blocking-first` crate.
#[proc_macro_attribute]
pub fn blocking_first(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::blocking_first(args.into(), item.into()).into()
}
