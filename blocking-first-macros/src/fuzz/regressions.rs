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

/// Bug 4: the safety net before a `while` condition wrapped the condition's first operand in a
/// block, `while let Some(v) = { leave; queue.lock().unwrap().pop() }`. In edition 2024 a block
/// drops its tail's temporaries at its end, so the guard was gone before the body (plain Rust
/// keeps it through the body); in any edition `while let Some(ref mut v) = slot` matched a copy
/// of `slot`. The condition now stays as written, after the switch back:
/// `loop { leave; if COND { body } else { break } }`, which is how rustc lowers `while`.
/// `ui/tests/editions/` runs such loops under both editions.
#[test]
pub(super) fn while_conditions_are_kept_as_written() {
    for (cond, scrutinee) in [
        (
            "let Some(v) = queue.lock().unwrap().pop()",
            "queue.lock().unwrap().pop()",
        ),
        ("let Some(ref mut v) = slot", "slot"),
        (
            "let Some(v) = it.next() && let Some(w) = v.checked_sub(1)",
            "it.next()",
        ),
        ("total < 10 && more()", "total"),
    ] {
        let item =
            format!("async fn f() {{ 'outer: while {cond} {{ io! {{ g().await }}; h(); }} }}");
        let input: syn::ItemFn = syn::parse_str(&item).unwrap();
        let output = expands("", &item);
        let file: syn::File = syn::parse_str(&output).expect("output parses");
        assert_eq!(
            rewritten_conditions(&input, &file),
            Vec::<String>::new(),
            "{output}"
        );
        let wrapped = format!(
            "leave_io () . await ; {}",
            scrutinee.parse::<TokenStream>().unwrap()
        );
        assert!(
            !output.contains(&wrapped),
            "`{scrutinee}` wrapped: {output}"
        );
        let as_loop = format!(
            "'outer : loop {{ # [allow (unreachable_code)] __bf . leave_io () . await ; \
             # [allow (clippy :: redundant_else)] if {}",
            cond.parse::<TokenStream>().unwrap()
        );
        assert!(output.contains(&as_loop), "no `{as_loop}` in {output}");
    }
}

/// Bug 8: an owned argument whose type mentions references only inside a function type (a `fn`
/// pointer, a boxed closure, a `for<'a>` bound) was rejected as borrowed.
#[test]
pub(super) fn references_inside_function_types_are_not_borrows() {
    for arg in [
        "cb: fn(&str) -> usize",
        "cb: Box<dyn Fn(&str) -> usize + Send + Sync>",
        "cb: std::sync::Arc<dyn Fn(&str) -> &str + Send + Sync>",
        "cb: impl Fn(&str) -> usize",
        "cb: for<'a> fn(&'a str) -> &'a str",
        "cb: Box<dyn for<'a> Fn(&'a str) -> &'a str + Send>",
        "p: Box<dyn for<'a> Parse<'a, &'a str> + Send>",
        "cb: &'static (dyn Fn(&str) -> usize + Sync)",
        "cbs: Vec<fn(&[u8]) -> Option<&u8>>",
        "s: &'static str",
    ] {
        let output = expands("", &format!("async fn f({arg}) {{}}"));
        assert!(
            !output.contains("compile_error"),
            "`{arg}` rejected: {output}"
        );
    }
    // Each still one error, at the borrow the argument holds.
    for arg in [
        "s: &str",
        "c: std::borrow::Cow<'_, str>",
        "cb: &dyn Fn(&str) -> usize",
        "cb: Box<dyn Fn(&str) -> usize + '_>",
        "cb: Box<dyn for<'a> Fn(&'a str) + Send + 'a>",
        "p: Box<dyn for<'a> Parse<'a, &'b str>>",
    ] {
        let output = expands("", &format!("async fn f({arg}) {{}}"));
        assert_eq!(
            output.matches("arguments must be owned").count(),
            1,
            "`{arg}`: {output}"
        );
    }
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
