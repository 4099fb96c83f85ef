//! `parallel! { a, b, c }`: a scoped join whose branches are closures, so each borrows the locals
//! it uses and a `?` in it returns from that branch only.

use proc_macro2::Span;
use quote::{format_ident, quote_spanned};
use syn::punctuated::Punctuated;
use syn::spanned::Spanned;
use syn::visit::Visit;
use syn::{Expr, Macro, Token, parse_quote_spanned};

use crate::scan::{Finder, Kind, Names, macro_span};

pub(crate) fn expand(mac: &Macro, span: Span, names: &Names) -> syn::Result<Expr> {
    let branches: Vec<Expr> = mac
        .parse_body_with(Punctuated::<Expr, Token![,]>::parse_terminated)?
        .into_iter()
        .collect();
    check(&branches, span, names)?;
    if names.plain {
        return Ok(parse_quote_spanned!(span=> ( #( (|| #branches)(), )* )));
    }

    let krate = &names.krate;
    let scope = syn::Ident::new("__scope", Span::mixed_site());
    let names: Vec<_> = (0..branches.len())
        .map(|index| format_ident!("__branch{}", index, span = Span::mixed_site()))
        .collect();
    // The caller's thread runs the last branch itself instead of waiting idle.
    let (last, spawned) = names.split_last().expect("checked: at least one branch");
    // Closures first, so a conflicting borrow between two branches gets rustc's plain
    // "borrowed more than once" error at the branches themselves.
    let closures = branches
        .iter()
        .zip(&names)
        .map(|(branch, name)| quote_spanned!(branch.span()=> let #name = || #branch;));
    let tokens = quote_spanned! {span=>
        {
            #( #closures )*
            #krate::__private::parallel::scope(|#scope| {
                #( let #spawned = #scope.spawn(#spawned); )*
                let #last = #krate::__private::parallel::run_inline(#last);
                ( #( #spawned.join(), )* #last, )
            })
        }
    };
    syn::parse2(tokens)
}

fn check(branches: &[Expr], span: Span, names: &Names) -> syn::Result<()> {
    if branches.is_empty() {
        return Err(syn::Error::new(
            span,
            "`parallel!` needs at least one branch: `parallel! { a(), b() }` runs `a()` and `b()` \
             side by side and gives `(a_value, b_value)`",
        ));
    }
    let mut errors = Vec::new();
    for branch in branches {
        let mut finder = Finder::default();
        finder.visit_expr(branch);
        for await_span in finder.await_spans {
            errors.push(syn::Error::new(
                await_span,
                "`.await` cannot be used inside a `parallel!` branch: branches are blocking code \
                 on their own threads; await before or after the `parallel!` (or in an `io!` \
                 region outside it)",
            ));
        }
        for inner in finder.macros {
            if let Some(kind) = Kind::of(&inner, &names.krate) {
                let what = if kind == Kind::Io {
                    "`io!`"
                } else {
                    "`parallel!`"
                };
                errors.push(syn::Error::new(
                    macro_span(&inner),
                    format!(
                        "{what} cannot be used inside a `parallel!` branch: a branch is a plain \
                         blocking closure; put the region before or after the `parallel!`{}",
                        if kind == Kind::Parallel {
                            ", or list all the branches in one `parallel!`"
                        } else {
                            ""
                        }
                    ),
                ));
            }
        }
    }
    match errors.into_iter().reduce(|mut all, next| {
        all.combine(next);
        all
    }) {
        Some(err) => Err(err),
        None => Ok(()),
    }
}
