//! Token-level mutations of generated functions.

use super::*;

/// Tokens to insert: the ones the macro cares about most.
pub(super) const POOL: &[&str] = &[
    "io",
    "parallel",
    "!",
    "{ }",
    "( )",
    "[ ]",
    ".",
    "await",
    "?",
    ";",
    ",",
    "'a",
    "return",
    "break",
    "continue",
    "async",
    "move",
    "|",
    "=>",
    "let",
    "else",
    "#",
    "::",
    "fn",
    "self",
    "&",
    "'static",
    "loop",
    "while",
    "=",
    "-",
    ">",
    "<",
    "_",
    "1",
    "\"s\"",
    "impl",
    "dyn",
    "where",
    "const",
    "crate",
    "limit",
    "io ! { }",
    "parallel ! { }",
    ". await",
];

pub(super) fn pool_tokens(rng: &mut Rng) -> Vec<TokenTree> {
    let source = rng.pick(POOL);
    source
        .parse::<TokenStream>()
        .expect("pool entries lex")
        .into_iter()
        .collect()
}

/// Applies one mutation at a random depth of the stream.
pub(super) fn mutate(stream: TokenStream, rng: &mut Rng) -> TokenStream {
    let mut trees: Vec<TokenTree> = stream.into_iter().collect();
    let groups: Vec<usize> = trees
        .iter()
        .enumerate()
        .filter(|(_, tree)| matches!(tree, TokenTree::Group(_)))
        .map(|(index, _)| index)
        .collect();
    if !groups.is_empty() && rng.chance(70) {
        let index = groups[rng.below(groups.len())];
        if let TokenTree::Group(group) = &trees[index] {
            let mut inner = Group::new(group.delimiter(), mutate(group.stream(), rng));
            inner.set_span(group.span());
            trees[index] = TokenTree::Group(inner);
        }
        return trees.into_iter().collect();
    }
    let len = trees.len();
    match rng.below(9) {
        0 if len > 0 => {
            trees.remove(rng.below(len));
        }
        1 if len > 0 => {
            let index = rng.below(len);
            let copy = trees[index].clone();
            trees.insert(index, copy);
        }
        2 if len > 1 => {
            let index = rng.below(len - 1);
            trees.swap(index, index + 1);
        }
        3 if len > 0 => trees.truncate(rng.below(len)),
        4 if !groups.is_empty() => {
            let index = groups[rng.below(groups.len())];
            if let TokenTree::Group(group) = &trees[index] {
                let delimiter = [
                    Delimiter::Brace,
                    Delimiter::Parenthesis,
                    Delimiter::Bracket,
                    Delimiter::None,
                ][rng.below(4)];
                trees[index] = TokenTree::Group(Group::new(delimiter, group.stream()));
            }
        }
        5 if len > 0 => {
            // An invisible group, as a `macro_rules!` fragment (`$e:expr`) arrives.
            let start = rng.below(len);
            let end = start + 1 + rng.below((len - start).min(4));
            let run: TokenStream = trees.drain(start..end).collect();
            trees.insert(start, TokenTree::Group(Group::new(Delimiter::None, run)));
        }
        6 if !groups.is_empty() => {
            // Splice a group's contents into its parent (an unbalanced edit, made balanced).
            let index = groups[rng.below(groups.len())];
            if let TokenTree::Group(group) = trees.remove(index) {
                for (offset, tree) in group.stream().into_iter().enumerate() {
                    trees.insert(index + offset, tree);
                }
            }
        }
        _ => {
            let at = rng.below(len + 1);
            for (offset, tree) in pool_tokens(rng).into_iter().enumerate() {
                trees.insert(at + offset, tree);
            }
        }
    }
    trees.into_iter().collect()
}

// ---------------------------------------------------------------------------------------------
// The oracle.
