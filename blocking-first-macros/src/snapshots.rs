//! Expansion snapshots: every `tests/expand/NAME.rs` is expanded as the compiler would and
//! compared with `tests/expand/NAME.expanded.rs`, pretty-printed as `cargo expand` shows it.
//! Accept changes with `UPDATE_EXPAND=1 cargo test -p blocking-first-macros`, then read the diff.

use std::fs;
use std::path::Path;

use proc_macro2::TokenStream;
use quote::ToTokens;
use syn::{Attribute, ImplItem, Item};

use crate::expand;

/// Expands every `#[blocking_first]` function of a file (free functions and methods).
pub(crate) fn expand_file(source: &str) -> String {
    let mut file = syn::parse_file(source).expect("fixture parses");
    let mut items = Vec::new();
    for item in file.items.drain(..) {
        match item {
            Item::Fn(mut func) => match take_attribute(&mut func.attrs) {
                Some(args) => items.extend(expand_item(args, func.into_token_stream())),
                None => items.push(Item::Fn(func)),
            },
            Item::Impl(mut block) => {
                let mut expanded = Vec::new();
                for item in block.items.drain(..) {
                    match item {
                        ImplItem::Fn(mut method) => match take_attribute(&mut method.attrs) {
                            Some(args) => {
                                let tokens = expand::blocking_first(args, method.to_token_stream());
                                expanded.push(syn::parse2(tokens).expect("expansion parses"));
                            }
                            None => expanded.push(ImplItem::Fn(method)),
                        },
                        other => expanded.push(other),
                    }
                }
                block.items = expanded;
                items.push(Item::Impl(block));
            }
            other => items.push(other),
        }
    }
    file.items = items;
    prettyplease::unparse(&file)
}

fn take_attribute(attrs: &mut Vec<Attribute>) -> Option<TokenStream> {
    let index = attrs
        .iter()
        .position(|attr| attr.path().is_ident("blocking_first"))?;
    let attr = attrs.remove(index);
    Some(match attr.meta {
        syn::Meta::List(list) => list.tokens,
        _ => TokenStream::new(),
    })
}

fn expand_item(args: TokenStream, item: TokenStream) -> Vec<Item> {
    let file: syn::File =
        syn::parse2(expand::blocking_first(args, item)).expect("expansion parses");
    file.items
}

#[test]
fn expansions_match_their_snapshots() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/expand");
    let update = std::env::var_os("UPDATE_EXPAND").is_some();
    let mut checked = 0;
    let mut mismatched = Vec::new();
    for entry in fs::read_dir(&dir).expect("tests/expand exists") {
        let path = entry.expect("readable dir").path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if !name.ends_with(".rs") || name.ends_with(".expanded.rs") {
            continue;
        }
        let expanded = expand_file(&fs::read_to_string(&path).unwrap());
        let snapshot = path.with_extension("expanded.rs");
        checked += 1;
        if update {
            fs::write(&snapshot, &expanded).unwrap();
        } else if fs::read_to_string(&snapshot).ok().as_deref() != Some(expanded.as_str()) {
            mismatched.push(format!("{name}:\n{expanded}"));
        }
    }
    assert!(
        checked >= 4,
        "expected the expansion fixtures in {}",
        dir.display()
    );
    assert!(
        mismatched.is_empty(),
        "expansions differ from their snapshots (UPDATE_EXPAND=1 to accept):\n{}",
        mismatched.join("\n")
    );
}

/// The guide's semantics page (`docs/semantics.md`, linked from README) shows
/// `tests/expand/readme.rs` and its expansion: they must stay the real ones.
#[test]
fn the_readme_shows_the_real_expansion() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = fs::read_to_string(root.join("../docs/semantics.md")).unwrap();
    let fixture = fs::read_to_string(root.join("tests/expand/readme.rs")).unwrap();
    let rust_blocks: Vec<&str> = readme
        .split("```rust,ignore\n")
        .skip(1)
        .map(|block| block.split("```").next().unwrap())
        .collect();
    assert!(
        rust_blocks.contains(&fixture.as_str()),
        "docs/semantics.md must show tests/expand/readme.rs verbatim"
    );
    assert!(
        rust_blocks.contains(&expand_file(&fixture).as_str()),
        "docs/semantics.md must show the expansion of tests/expand/readme.rs:\n{}",
        expand_file(&fixture)
    );
}
