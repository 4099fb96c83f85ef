//! Doc tests only (the compile-error tests are `tests/ui.rs`): code whose meaning depends on the
//! edition, run under each edition a user's crate may have. A package has one edition; a doc
//! test names its own, so the same file runs as 2021 code and as 2024 code.
//!
//! `tests/editions/loops.rs`: every loop form and labeled blocks, with a region inside, drop
//! their temporaries in the same order as the same body without the attribute (2024 drops a
//! block's tail temporaries at the end of the block; 2021 at the end of the statement), and the
//! code that runs after a jump the attribute cannot see (in `select!`) is still blocking code.
//! `tests/editions/let_chains.rs` adds the let chains of 2024.
#![doc = concat!(
    "```edition2021\n",
    include_str!("../tests/editions/loops.rs"),
    "fn main() {\n    run(every_edition());\n}\n```\n"
)]
#![doc = concat!(
    "```edition2024\n",
    include_str!("../tests/editions/loops.rs"),
    include_str!("../tests/editions/let_chains.rs"),
    "fn main() {\n    run(async {\n        every_edition().await;\n        edition_2024().await;\n    });\n}\n```\n"
)]
