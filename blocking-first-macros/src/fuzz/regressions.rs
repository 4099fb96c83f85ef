//! Hand-written inputs the grammar reaches rarely, and the first panics the fuzz test found.

use super::*;

// ---------------------------------------------------------------------------------------------
// Hand-written inputs the grammar reaches rarely, and the first panics the fuzz test found.

pub(super) fn expands(args: &str, item: &str) -> String {
    let args: TokenStream = args.parse().unwrap();
    let item: TokenStream = item.parse().unwrap();
    let output = expand_caught(&args, &item).unwrap_or_else(|message| {
        panic!("expanding `{item}` panicked: {message}");
    });
    output.to_string()
}

#[test]
pub(super) fn truncated_and_garbled_functions_come_back_with_an_error() {
    for item in [
        "",
        "async",
        "async fn",
        "async fn f",
        "async fn f()",
        "async fn f() ->",
        "async fn f() -> u32",
        "async fn f() { io! }",
        "async fn f() { io! { } io! }",
        "async fn f() { parallel! }",
        "async fn f() {} async fn g() {}",
        "struct S;",
        "fn",
        "{ io! { 1 } }",
        "async fn f() { let x = ; }",
        "#[x] async fn f() { } extra",
    ] {
        let output = expands("", item);
        assert!(
            output.contains("compile_error"),
            "`{item}` gave no error: {output}"
        );
    }
}

#[test]
pub(super) fn regions_in_invisible_groups_are_still_rewritten() {
    // A `macro_rules!` that forwards `$body:block` hands the attribute invisible groups.
    let body = TokenStream::from_iter([TokenTree::Group(Group::new(
        Delimiter::None,
        "io! { fetch().await }".parse().unwrap(),
    ))]);
    let item: TokenStream = quote::quote!(async fn f() -> u32 { let v = #body; v })
        .into_iter()
        .collect();
    let output = expand_caught(&TokenStream::new(), &item).expect("no panic");
    syn::parse2::<syn::File>(output).expect("output parses");
}

/// Found by the fuzz test: `Kind::of` indexed `segments[len - 2]` of a one-segment path.
#[test]
pub(super) fn leading_colon_region_path_does_not_panic() {
    let output = expands("", "async fn f() { ::io! { 1 }; ::parallel!(a, b); }");
    syn::parse2::<syn::File>(output.parse().unwrap()).expect("output parses");
}

/// Found by the fuzz test: the safety net before a `while` condition wrapped a whole let chain
/// in a block, `{ leave; let Some(v) = .. && .. }`, which does not parse.
#[test]
pub(super) fn while_let_chain_around_a_region_does_not_panic() {
    let output = expands(
        "",
        "async fn f(mut it: std::vec::IntoIter<u32>) { \
             while let Some(v) = it.next() && v > 1 { io! { g(v).await }; } \
         }",
    );
    assert!(!output.contains("compile_error"), "{output}");
    syn::parse2::<syn::File>(output.parse().unwrap()).expect("output parses");
}

/// Attributes and the signature pass through; the one change is the bound a driven body needs,
/// `Send + 'static`, added to each type parameter (and `impl Trait` argument).
#[test]
pub(super) fn the_signature_and_every_attribute_pass_through_unchanged() {
    let item = "/// Documented.\n\
        #[doc = \"more\"] #[allow(unused_variables)] #[must_use = \"the answer\"] \
        #[cfg_attr(test, inline)] #[axum::debug_handler] #[tracing::instrument(skip_all)] \
        pub(crate) async fn handler<T: Clone + Send + 'static, const N: usize>(\
            self: Arc<Self>, State(app): State<App>, #[allow(unused)] t: T\
        ) -> Result<impl IntoResponse, Box<dyn Error + Send + Sync>> \
        where T: Default \
        { let v = io! { fetch().await }; Ok(v) }";
    let before: syn::ItemFn = syn::parse_str(item).unwrap();
    let after: syn::ItemFn = syn::parse_str(&expands("limit = DB", item)).unwrap();
    let tokens = |attrs: &[syn::Attribute]| quote::quote!(#(#attrs)*).to_string();
    assert_eq!(tokens(&after.attrs), tokens(&before.attrs));
    let mut sig = before.sig.clone();
    sig.generics
        .make_where_clause()
        .predicates
        .push(syn::parse_quote!(T: ::core::marker::Send + 'static));
    let vis = &before.vis;
    let (vis_after, sig_after) = (&after.vis, &after.sig);
    assert_eq!(
        quote::quote!(#vis_after #sig_after).to_string(),
        quote::quote!(#vis #sig).to_string()
    );
}

#[test]
pub(super) fn impl_trait_arguments_get_send_and_static() {
    let item = "async fn f(a: impl AsRef<str>, b: Vec<impl Clone>) -> usize { a.as_ref().len() + b.len() }";
    let after: syn::ItemFn = syn::parse_str(&expands("", item)).unwrap();
    let inputs = &after.sig.inputs;
    assert_eq!(
        quote::quote!(#inputs).to_string(),
        quote::quote!(
            a: impl AsRef<str> + ::core::marker::Send + 'static,
            b: Vec<impl Clone + ::core::marker::Send + 'static>
        )
        .to_string()
    );
}
