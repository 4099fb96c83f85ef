//! What a region is and where the rewriter finds them: the two region macros, the names the
//! rewriter puts into the body, and the searches that stay at the level of the body (outside
//! closures, async blocks and nested items).

use proc_macro2::{Spacing, Span, TokenStream, TokenTree};
use quote::quote;
use syn::spanned::Spanned;
use syn::visit::{self, Visit};
use syn::{Expr, Ident, Item, Macro, Path, Type, parse_quote_spanned};

/// The two region macros.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Io,
    Parallel,
}

impl Kind {
    /// `io!` or `parallel!` written as `io!`, `blocking_first::io!` or `<crate path>::io!`.
    pub(crate) fn of(mac: &Macro, krate: &Path) -> Option<Kind> {
        let segments = &mac.path.segments;
        let last = segments.last()?;
        let kind = match last.ident.to_string().as_str() {
            "io" => Kind::Io,
            "parallel" => Kind::Parallel,
            _ => return None,
        };
        let Some(parent) = segments.iter().rev().nth(1).map(|seg| &seg.ident) else {
            // `io!` is ours; `::io!` names a crate called `io`.
            return mac.path.leading_colon.is_none().then_some(kind);
        };
        let ours = parent == "blocking_first"
            || krate
                .segments
                .last()
                .is_some_and(|seg| seg.ident == *parent);
        ours.then_some(kind)
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::Io => "io!",
            Kind::Parallel => "parallel!",
        }
    }
}

/// Names the rewriter puts into the body.
pub(crate) struct Names {
    pub(crate) krate: Path,
    /// The body's mode handle, on `Span::mixed_site()` so a user's own `__bf` keeps working.
    pub(crate) mode: Ident,
    /// The local that gives every `return` the declared return type.
    pub(crate) ret: Ident,
    /// The declared return type with `impl Trait` replaced by `_`.
    pub(crate) ret_ty: Type,
    /// Strip regions to plain blocks instead of driving them (when the signature is rejected).
    pub(crate) plain: bool,
}

/// The span to report a region at: its `io!` / `parallel!` path.
pub(crate) fn macro_span(mac: &Macro) -> Span {
    let path = &mac.path;
    let bang = mac.bang_token;
    quote!(#path #bang)
        .into_iter()
        .map(|tree| tree.span())
        .reduce(|first, next| first.join(next).unwrap_or(first))
        .unwrap_or_else(Span::call_site)
}

/// An error for `io!` / `parallel!` written inside another macro's arguments, which the attribute
/// cannot rewrite (it cannot know how that macro uses its tokens).
pub(crate) fn hidden_region(outer: &Macro) -> Option<Expr> {
    /// A region is `io` or `parallel`, a lone `!` (not the `!` of `!=`), and a delimited group:
    /// `assert!(io != 0)` names a local, not a region.
    fn find(tokens: TokenStream) -> Option<(Span, String)> {
        let trees: Vec<TokenTree> = tokens.into_iter().collect();
        for (i, tree) in trees.iter().enumerate() {
            match tree {
                TokenTree::Ident(ident) if ident == "io" || ident == "parallel" => {
                    let bang = matches!(
                        trees.get(i + 1),
                        Some(TokenTree::Punct(p)) if p.as_char() == '!' && p.spacing() == Spacing::Alone
                    );
                    if bang && matches!(trees.get(i + 2), Some(TokenTree::Group(_))) {
                        return Some((ident.span(), ident.to_string()));
                    }
                }
                TokenTree::Group(group) => {
                    if let Some(found) = find(group.stream()) {
                        return Some(found);
                    }
                }
                _ => {}
            }
        }
        None
    }
    let (span, name) = find(outer.tokens.clone())?;
    let outer_name = outer
        .path
        .segments
        .last()
        .map(|seg| seg.ident.to_string())?;
    Some(error_expr(syn::Error::new(
        span,
        format!(
            "`{name}!` inside the arguments of `{outer_name}!` cannot be rewritten by \
             #[blocking_first]: bind the region's value to a local first \
             (`let value = {name}! {{ .. }};`) and pass the local to `{outer_name}!`"
        ),
    )))
}

/// A compile error in expression position, at the error's span.
pub(crate) fn error_expr(err: syn::Error) -> Expr {
    let tokens = err.to_compile_error();
    parse_quote_spanned!(err.span()=> { #tokens })
}

/// Whether an expression awaits, outside closures, async blocks and nested items.
pub(crate) fn contains_await(expr: &Expr) -> bool {
    let mut finder = Finder::default();
    finder.visit_expr(expr);
    !finder.await_spans.is_empty()
}

/// Whether an expression holds an `io!` region, outside closures, async blocks and nested items.
pub(crate) fn contains_io(expr: &Expr, krate: &Path) -> bool {
    let mut finder = Finder::default();
    finder.visit_expr(expr);
    finder
        .macros
        .iter()
        .any(|mac| Kind::of(mac, krate) == Some(Kind::Io))
}

/// Collects `.await`s and macro invocations at the level of the body being rewritten.
#[derive(Default)]
pub(crate) struct Finder {
    pub(crate) await_spans: Vec<Span>,
    pub(crate) macros: Vec<Macro>,
}

impl<'ast> Visit<'ast> for Finder {
    fn visit_expr_await(&mut self, expr: &'ast syn::ExprAwait) {
        self.await_spans.push(expr.await_token.span());
        visit::visit_expr_await(self, expr);
    }

    fn visit_macro(&mut self, mac: &'ast Macro) {
        self.macros.push(mac.clone());
    }

    fn visit_expr_closure(&mut self, _: &'ast syn::ExprClosure) {}

    fn visit_expr_async(&mut self, _: &'ast syn::ExprAsync) {}

    fn visit_item(&mut self, _: &'ast Item) {}
}
