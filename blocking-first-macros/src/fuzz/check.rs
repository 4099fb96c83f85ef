//! What every expansion must satisfy, and shrinking a failing input.

use super::*;

/// Region macros left in the output outside closures, async blocks and nested items: those the
/// macro should have rewritten or reported.
#[derive(Default)]
pub(super) struct LeftoverRegions(pub(super) Vec<String>);

impl<'ast> Visit<'ast> for LeftoverRegions {
    fn visit_macro(&mut self, mac: &'ast syn::Macro) {
        let path = &mac.path;
        let last = path.segments.last().map(|seg| seg.ident.to_string());
        if matches!(last.as_deref(), Some("io" | "parallel")) {
            self.0.push(quote::quote!(#path).to_string());
        }
    }
    fn visit_expr_closure(&mut self, _: &'ast syn::ExprClosure) {}
    fn visit_expr_async(&mut self, _: &'ast syn::ExprAsync) {}
    fn visit_item(&mut self, item: &'ast syn::Item) {
        // Only the expanded function itself is looked into.
        if let syn::Item::Fn(func) = item {
            visit::visit_item_fn(self, func);
        }
    }
    fn visit_block(&mut self, block: &'ast syn::Block) {
        for stmt in &block.stmts {
            if !matches!(stmt, syn::Stmt::Item(_)) {
                visit::visit_stmt(self, stmt);
            }
        }
    }
}

/// The conditions of `while` loops (and, with `ifs`, of `if`s) as written, at any depth.
#[derive(Default)]
pub(super) struct Conditions {
    pub(super) ifs: bool,
    pub(super) found: Vec<String>,
}

impl<'ast> Visit<'ast> for Conditions {
    fn visit_expr_while(&mut self, expr: &'ast syn::ExprWhile) {
        let cond = &expr.cond;
        self.found.push(quote::quote!(#cond).to_string());
        visit::visit_expr_while(self, expr);
    }
    fn visit_expr_if(&mut self, expr: &'ast syn::ExprIf) {
        if self.ifs {
            let cond = &expr.cond;
            self.found.push(quote::quote!(#cond).to_string());
        }
        visit::visit_expr_if(self, expr);
    }
}

/// The input's `while` conditions missing from the output's `while` and `if` conditions (a
/// `while` around a region becomes `loop { .. if COND { .. } else { break } }`). The attribute
/// must not wrap a condition or a `let`'s scrutinee: in edition 2024 a block drops its tail's
/// temporaries (a lock guard) before the body, and in any edition a block turns a place into a
/// copy (`while let Some(ref mut v) = slot`).
pub(super) fn rewritten_conditions(input: &syn::ItemFn, output: &syn::File) -> Vec<String> {
    let mut before = Conditions::default();
    before.visit_item_fn(input);
    let mut after = Conditions {
        ifs: true,
        ..Conditions::default()
    };
    after.visit_file(output);
    before
        .found
        .into_iter()
        .filter(
            |cond| match after.found.iter().position(|kept| kept == cond) {
                Some(index) => {
                    after.found.swap_remove(index);
                    false
                }
                None => true,
            },
        )
        .collect()
}

/// What went wrong with one expansion.
pub(super) type Failure = String;

thread_local! {
    static QUIET: Cell<bool> = const { Cell::new(false) };
}

/// Keeps the expected panics of this module out of the output; other threads print as usual.
pub(super) fn quiet_panics() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let default = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if !QUIET.get() {
                default(info);
            }
        }));
    });
}

pub(super) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_string()))
        .unwrap_or_else(|| "<non-string payload>".into())
}

/// Expands without letting a panic escape.
pub(super) fn expand_caught(args: &TokenStream, item: &TokenStream) -> Result<TokenStream, String> {
    quiet_panics();
    QUIET.set(true);
    let result = panic::catch_unwind(AssertUnwindSafe(|| {
        expand::blocking_first(args.clone(), item.clone())
    }));
    QUIET.set(false);
    result.map_err(|payload| panic_message(&*payload))
}

/// What the generator knows about an input.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Expect {
    /// The macro must reject it.
    Error,
    /// The macro must accept it: no `compile_error!`, every region rewritten.
    Accepted,
    /// Mutated: only the structural properties hold.
    Unknown,
}

/// Checks one input against every property; `Err` describes the first one broken.
pub(super) fn check(args: &TokenStream, item: &TokenStream, expect: Expect) -> Result<(), Failure> {
    let output = expand_caught(args, item).map_err(|message| format!("panicked: {message}"))?;
    let again = expand_caught(args, item).map_err(|message| format!("panicked: {message}"))?;
    if output.to_string() != again.to_string() {
        return Err("two expansions of the same input differ".into());
    }
    let text = output.to_string();
    let has_error = text.contains("compile_error");

    let func = syn::parse2::<syn::ItemFn>(item.clone());
    match &func {
        Err(_) if !has_error => {
            return Err("input is not a function, yet the output has no compile_error!".into());
        }
        Err(_) => {}
        Ok(func) => {
            let file = syn::parse2::<syn::File>(output.clone())
                .map_err(|err| format!("output does not parse as items: {err}\noutput: {text}"))?;
            let bad_args = syn::parse2::<Args>(args.clone()).is_err();
            let bad_signature = signature::check(&func.sig).is_err();
            if (bad_args || bad_signature) && !has_error {
                return Err(format!(
                    "bad {} but no compile_error!\noutput: {text}",
                    if bad_args { "arguments" } else { "signature" }
                ));
            }
            if expect == Expect::Accepted {
                if has_error {
                    return Err(format!(
                        "accepted input got a compile_error!\noutput: {text}"
                    ));
                }
                if !text.contains("__private :: drive") {
                    return Err(format!("accepted input is not driven\noutput: {text}"));
                }
                let changed = rewritten_conditions(func, &file);
                if !changed.is_empty() {
                    return Err(format!(
                        "`while` conditions not kept as written: {changed:?}\noutput: {text}"
                    ));
                }
                let mut leftover = LeftoverRegions::default();
                leftover.visit_file(&file);
                if !leftover.0.is_empty() {
                    return Err(format!(
                        "regions left unrewritten: {:?}\noutput: {text}",
                        leftover.0
                    ));
                }
            }
        }
    }
    if expect == Expect::Error && !has_error {
        return Err(format!(
            "rejected input got no compile_error!\noutput: {text}"
        ));
    }
    if expect == Expect::Accepted && func.is_err() {
        return Err("the generator's accepted input does not parse as a function".into());
    }
    Ok(())
}

/// Shrinks a failing input by deleting tokens and unwrapping groups while the failure stays the
/// same kind (its first line), so a report shows a small reproducer.
pub(super) fn shrink(
    args: &TokenStream,
    item: &TokenStream,
    expect: Expect,
    failure: &str,
) -> TokenStream {
    let kind = |failure: &str| failure.lines().next().unwrap_or("").to_string();
    let want = kind(failure);
    let still_fails = |candidate: &TokenStream| matches!(check(args, candidate, expect), Err(other) if kind(&other) == want);
    let mut best = item.clone();
    let mut budget = 3000;
    loop {
        let mut improved = false;
        let count = count_edits(&best);
        let mut edit = 0;
        while edit < count && budget > 0 {
            budget -= 1;
            for unwrap in [false, true] {
                if let Some(candidate) = apply_edit(&best, edit, unwrap) {
                    if still_fails(&candidate) {
                        best = candidate;
                        improved = true;
                        break;
                    }
                }
            }
            edit += 1;
        }
        if !improved || budget == 0 {
            return best;
        }
    }
}

/// Tokens (at every depth) that an edit can target.
pub(super) fn count_edits(stream: &TokenStream) -> usize {
    stream
        .clone()
        .into_iter()
        .map(|tree| match tree {
            TokenTree::Group(group) => 1 + count_edits(&group.stream()),
            _ => 1,
        })
        .sum()
}

/// Deletes the `target`-th token (or, with `unwrap`, replaces that group by its contents).
pub(super) fn apply_edit(stream: &TokenStream, target: usize, unwrap: bool) -> Option<TokenStream> {
    pub(super) fn walk(
        stream: TokenStream,
        target: &mut usize,
        unwrap: bool,
        done: &mut bool,
    ) -> TokenStream {
        let mut out = Vec::new();
        for tree in stream {
            if *done {
                out.push(tree);
                continue;
            }
            if *target == 0 {
                *done = true;
                match (tree, unwrap) {
                    (TokenTree::Group(group), true) => out.extend(group.stream()),
                    (_, false) => {}
                    (tree, true) => {
                        out.push(tree);
                        *done = false;
                        *target = usize::MAX; // nothing to unwrap: give up on this edit
                    }
                }
                continue;
            }
            *target -= 1;
            match tree {
                TokenTree::Group(group) => {
                    let inner = walk(group.stream(), target, unwrap, done);
                    let mut copy = Group::new(group.delimiter(), inner);
                    copy.set_span(group.span());
                    out.push(TokenTree::Group(copy));
                }
                tree => out.push(tree),
            }
        }
        out.into_iter().collect()
    }
    let mut target = target;
    let mut done = false;
    let result = walk(stream.clone(), &mut target, unwrap, &mut done);
    done.then_some(result)
}
