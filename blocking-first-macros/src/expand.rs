//! Puts it together: parse, check, rewrite the body, wrap it in the driver.

use proc_macro2::{Span, TokenStream, TokenTree};
use quote::{quote, quote_spanned};
use syn::visit_mut::{self, VisitMut};
use syn::{Block, Ident, ItemFn, ReturnType, Type, parse_quote, parse_quote_spanned};

use crate::args::Args;
use crate::regions::Rewriter;
use crate::scan::Names;
use crate::signature;

pub(crate) fn blocking_first(args: TokenStream, item: TokenStream) -> TokenStream {
    // A body that does not parse (an edit in progress) is re-emitted untouched, so the IDE keeps
    // seeing the function.
    let mut func: ItemFn = match syn::parse2(item.clone()) {
        Ok(func) => func,
        Err(err) => {
            let err = err.to_compile_error();
            return quote!(#item #err);
        }
    };
    let mut errors = Vec::new();
    let args = syn::parse2::<Args>(args).unwrap_or_else(|err| {
        errors.push(err);
        syn::parse_quote!()
    });
    if let Err(err) = signature::check(&func.sig) {
        errors.push(err);
    }
    if let Some(err) = instrumented_first(&func.block) {
        errors.push(err);
    }

    let names = Names {
        krate: args.krate.clone(),
        mode: syn::Ident::new("__bf", Span::mixed_site()),
        ret: syn::Ident::new("__ret", Span::mixed_site()),
        ret_ty: return_type(&func.sig.output),
        // On a rejected signature the regions become plain blocks, so only our error shows.
        plain: !errors.is_empty(),
    };
    Rewriter::new(&names).rewrite_body(&mut func.block);
    if names.plain {
        let errors = errors.into_iter().map(syn::Error::into_compile_error);
        return quote!(#(#errors)* #func);
    }
    *func.block = wrap(&func.block, &func.sig.ident, &names, &args);
    if signature::add_send_bounds(&mut func.sig) {
        func.attrs
            .push(syn::parse_quote!(#[allow(clippy::implied_bounds_in_impls)]));
    }
    quote!(#func)
}

/// The body, handed to the driver as one `async move` block.
fn wrap(body: &Block, name: &Ident, names: &Names, args: &Args) -> Block {
    let Names {
        krate,
        mode,
        ret,
        ret_ty,
        ..
    } = names;
    let limit = match &args.limit {
        Some(limit) => quote!(::core::option::Option::Some(&#limit)),
        None => quote!(::core::option::Option::None),
    };
    let span = body.brace_token.span.join();
    let private = quote_spanned!(span=> #krate::__private);
    // The one place the body must be `Send`, written at the attribute: a body that is not gets
    // "required by a bound in `body_must_be_send`" pointing at the user's `#[blocking_first]`.
    let check = Ident::new(
        "body_must_be_send",
        Span::mixed_site().located_at(Span::call_site()),
    );
    let attr = Span::call_site();
    let must_be_send = quote_spanned! {attr=>
        fn #check<F>(body: F) -> #private::Body<F::Output>
        where
            F: ::core::future::Future + ::core::marker::Send + 'static,
            F::Output: ::core::marker::Send + 'static,
        {
            #private::Body::new(::std::boxed::Box::pin(body))
        }
    };
    // Where the function is, for its time split: `line!()` at the attribute is its line.
    let site = Ident::new("__BLOCKING_FIRST_SITE", Span::mixed_site());
    let function = name.to_string();
    let site_static = quote_spanned! {attr=>
        static #site: #private::Site = #private::Site::new(
            ::core::concat!(::core::module_path!(), "::", #function),
            ::core::file!(),
            ::core::line!(),
        );
    };
    parse_quote_spanned! {span=>
        {
            #must_be_send
            #site_static
            #private::drive(&#site, #limit, move |#mode: #private::Mode| {
                #check(async move {
                    // A body ending in `panic!()`/`todo!()` is a "diverging sub-expression" here.
                    #[allow(clippy::diverging_sub_expression, clippy::let_unit_value)]
                    let #ret: #ret_ty = #body;
                    #[allow(unreachable_code, clippy::needless_return)]
                    return #ret;
                })
            })
            .await
        }
    }
}

/// The declared return type, with `impl Trait` replaced by `_` so it can type a `let`.
fn return_type(output: &ReturnType) -> Type {
    struct InferImplTrait;
    impl VisitMut for InferImplTrait {
        fn visit_type_mut(&mut self, ty: &mut Type) {
            if let Type::ImplTrait(_) = ty {
                *ty = parse_quote!(_);
            } else {
                visit_mut::visit_type_mut(self, ty);
            }
        }
    }
    let mut ty = match output {
        ReturnType::Default => parse_quote!(()),
        ReturnType::Type(_, ty) => (**ty).clone(),
    };
    InferImplTrait.visit_type_mut(&mut ty);
    ty
}

/// `#[tracing::instrument]` written above `#[blocking_first]` has already wrapped the body in an
/// async block of its own, where no region can be driven.
fn instrumented_first(body: &Block) -> Option<syn::Error> {
    fn mentions(tokens: TokenStream) -> bool {
        tokens.into_iter().any(|tree| match tree {
            TokenTree::Ident(ident) => ident.to_string().starts_with("__tracing_attr"),
            TokenTree::Group(group) => mentions(group.stream()),
            _ => false,
        })
    }
    mentions(quote!(#body)).then(|| {
        syn::Error::new(
            Span::call_site(),
            "#[blocking_first] must come before #[tracing::instrument]: put `#[blocking_first]` \
             on the line above `#[instrument]`, so the span wraps the whole driven body",
        )
    })
}
