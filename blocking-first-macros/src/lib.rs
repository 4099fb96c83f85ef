//! The `#[blocking_first]` attribute. Use it through the [`blocking-first`] crate, whose docs
//! describe what it does and show its expansion.
//!
//! [`blocking-first`]: https://docs.rs/blocking-first

mod args;
mod expand;
mod forbid;
#[cfg(test)]
mod fuzz;
mod parallel;
mod regions;
mod scan;
mod signature;
#[cfg(test)]
mod snapshots;

use proc_macro::TokenStream;

// Documented where users see it: the re-export in the `blocking-first` crate (a doc comment here
// would be shown there a second time).
#[allow(missing_docs)]
#[proc_macro_attribute]
pub fn blocking_first(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::blocking_first(args.into(), item.into()).into()
}
