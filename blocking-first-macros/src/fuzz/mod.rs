//! The macro never panics: thousands of generated `async fn`s (regions in odd places, labels,
//! `let`-`else`, closures, async blocks, other macros, attributes, generics, receivers, valid and
//! invalid attribute arguments) and token-level mutations of them (deleted, duplicated, swapped,
//! inserted tokens, changed delimiters, invisible groups, truncation) go through
//! [`expand::blocking_first`]. Each expansion must return; when the input was a function, the
//! output must parse as items; when the input was bad, the output must carry a `compile_error!`;
//! when the generator knows the input is accepted, the output must carry none, every region
//! must be rewritten and every `while` condition kept as written (edition-2024 let chains and
//! scrutinees with temporaries included).
//!
//! The default run is fixed and deterministic. Explore further with
//! `BLOCKING_FIRST_FUZZ_SEED=<u64> BLOCKING_FIRST_FUZZ_CASES=<n> cargo test -p
//! blocking-first-macros fuzz -- --nocapture`; a failure prints its input, shrunk.

use std::cell::Cell;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Once;
use std::time::Instant;

use proc_macro2::{Delimiter, Group, TokenStream, TokenTree};
use syn::visit::{self, Visit};

use crate::args::Args;
use crate::expand;
use crate::signature;

mod check;
mod grammar;
mod grammar_code;
mod grammar_signature;
mod mutate;
mod regressions;
mod rng;
mod run;

use check::*;
use grammar::*;
use grammar_signature::*;
use mutate::*;
use rng::*;
