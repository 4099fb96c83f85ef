//! Checks that the function can become a driven body: an `async fn` whose future can be
//! `Send + 'static`, because the body moves between the runtime and blocking threads.

use proc_macro2::{Ident, Span};
use syn::spanned::Spanned;
use syn::visit::{self, Visit};
use syn::visit_mut::{self, VisitMut};
use syn::{
    FnArg, GenericParam, Lifetime, ParenthesizedGenericArguments, Signature, TraitBound, Type,
    TypeBareFn, TypeImplTrait, TypeReference, parse_quote_spanned,
};

/// All signature problems at once, each at the user's span.
pub(crate) fn check(sig: &Signature) -> syn::Result<()> {
    let mut errors = Vec::new();
    if sig.asyncness.is_none() {
        errors.push(syn::Error::new_spanned(
            sig.fn_token,
            "#[blocking_first] goes on an `async fn`: write `async fn`, the body then runs as \
             blocking code on tokio's blocking pool",
        ));
    }
    if let Some(constness) = sig.constness {
        errors.push(syn::Error::new_spanned(
            constness,
            "#[blocking_first] cannot be used on a `const fn`",
        ));
    }
    for param in sig.generics.lifetimes() {
        errors.push(syn::Error::new_spanned(
            &param.lifetime,
            "#[blocking_first] functions cannot have lifetime parameters: the body moves between \
             threads, so everything it holds must be owned (`'static`); take owned values or `Arc`s",
        ));
    }
    for input in &sig.inputs {
        match input {
            FnArg::Receiver(receiver) if receiver.reference.is_some() => {
                errors.push(syn::Error::new_spanned(
                    receiver,
                    "#[blocking_first] methods cannot borrow `self`: the body moves between \
                     threads and must own what it uses; take `self: Arc<Self>` (or `self`)",
                ));
            }
            FnArg::Receiver(receiver) => check_type(&receiver.ty, &mut errors),
            FnArg::Typed(arg) => check_type(&arg.ty, &mut errors),
        }
    }
    errors
        .into_iter()
        .reduce(|mut all, next| {
            all.combine(next);
            all
        })
        .map_or(Ok(()), Err)
}

fn check_type(ty: &Type, errors: &mut Vec<syn::Error>) {
    let mut finder = Borrows::default();
    finder.visit_type(ty);
    for span_source in finder.found {
        errors.push(syn::Error::new(
            span_source,
            "#[blocking_first] arguments must be owned (`'static`): the body moves between the \
             runtime and blocking threads, so it cannot hold a borrow of the caller's data; take \
             an owned value (`String`, `Vec<T>`) or an `Arc`",
        ));
    }
}

/// Finds references and lifetimes other than `'static` in a type: the borrows an argument can
/// hold. Not the parameters and results of function types (the `&str` of `fn(&str) -> usize` or
/// `dyn Fn(&str) -> usize` is lent by each call, not held), nor lifetimes bound by `for<'a>`;
/// what a closure type may hold still counts (`dyn Fn(&str) + '_`).
#[derive(Default)]
struct Borrows {
    found: Vec<proc_macro2::Span>,
    /// Lifetimes bound by the enclosing `for<..>`s.
    bound: Vec<Lifetime>,
}

impl<'ast> Visit<'ast> for Borrows {
    fn visit_type_reference(&mut self, reference: &'ast TypeReference) {
        match &reference.lifetime {
            Some(lifetime) if lifetime.ident == "static" || self.bound.contains(lifetime) => {
                visit::visit_type(self, &reference.elem)
            }
            _ => self.found.push(reference.span()),
        }
    }

    fn visit_lifetime(&mut self, lifetime: &'ast Lifetime) {
        if lifetime.ident != "static" && !self.bound.contains(lifetime) {
            self.found.push(lifetime.span());
        }
    }

    // `fn(&str) -> &str`, `for<'a> fn(&'a str)`: its parameters and result.
    fn visit_type_bare_fn(&mut self, _: &'ast TypeBareFn) {}

    // `Fn(&str) -> usize`: the parameters and result of a closure trait.
    fn visit_parenthesized_generic_arguments(&mut self, _: &'ast ParenthesizedGenericArguments) {}

    // `for<'a> Trait<'a>`: `'a` is not a borrow of the caller's data.
    fn visit_trait_bound(&mut self, bound: &'ast TraitBound) {
        let outer = self.bound.len();
        if let Some(lifetimes) = &bound.lifetimes {
            self.bound
                .extend(lifetimes.lifetimes.iter().filter_map(|param| match param {
                    GenericParam::Lifetime(param) => Some(param.lifetime.clone()),
                    _ => None,
                }));
        }
        self.visit_path(&bound.path);
        self.bound.truncate(outer);
    }
}

/// Adds the bounds a driven body needs, `Send + 'static`, to every type parameter and every
/// `impl Trait` argument.
///
/// The body is checked inside the generic function, not where axum picks the concrete types, so
/// a parameter that is `Send + 'static` in every real use must say so. Saying it for the user
/// keeps handlers like `async fn get<E>(form: Result<Form<F>, E>)` compiling as written; a caller
/// with a non-`Send` type gets the error at the call, naming the bound. The bounds carry the
/// attribute's span: they are generated code, so lints about how bounds are written (a bound in
/// two places, one implied by a supertrait) do not fire on the user's signature.
///
/// Returns whether an `impl Trait` got them: clippy's `implied_bounds_in_impls` then fires on
/// the generated `+ Send` when the trait already implies it, which the caller allows.
pub(crate) fn add_send_bounds(sig: &mut Signature) -> bool {
    let span = Span::call_site();
    let params: Vec<_> = sig
        .generics
        .type_params()
        .map(|param| Ident::new(&param.ident.to_string(), span))
        .collect();
    if !params.is_empty() {
        let where_clause = sig.generics.make_where_clause();
        for ident in params {
            where_clause.predicates.push(parse_quote_spanned! {span=>
                #ident: ::core::marker::Send + 'static
            });
        }
    }
    struct ImplTraits(Span, bool);
    impl VisitMut for ImplTraits {
        fn visit_type_impl_trait_mut(&mut self, ty: &mut TypeImplTrait) {
            visit_mut::visit_type_impl_trait_mut(self, ty);
            self.1 = true;
            let span = self.0;
            ty.bounds
                .push(parse_quote_spanned!(span=> ::core::marker::Send));
            ty.bounds.push(parse_quote_spanned!(span=> 'static));
        }
    }
    let mut impl_traits = ImplTraits(span, false);
    for input in &mut sig.inputs {
        if let FnArg::Typed(arg) = input {
            impl_traits.visit_type_mut(&mut arg.ty);
        }
    }
    impl_traits.1
}
