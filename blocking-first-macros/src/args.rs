//! The attribute's arguments: `crate = path` and `limit = PATH`.

use syn::parse::{Parse, ParseStream};
use syn::{Expr, ExprLit, Lit, Path, Token, parse_quote};

/// Parsed `#[blocking_first(...)]` arguments.
pub(crate) struct Args {
    /// Path of the `blocking-first` crate in generated code (`crate = path` for renamed deps).
    pub(crate) krate: Path,
    /// A `static Limit` whose slots this function's blocking code takes.
    pub(crate) limit: Option<Path>,
}

const VALID: &str = "#[blocking_first] accepts `limit = PATH_TO_STATIC_LIMIT` and `crate = path`";

impl Parse for Args {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let mut krate = None;
        let mut limit = None;
        while !input.is_empty() {
            let name: syn::Ident = if input.peek(Token![crate]) {
                let token: Token![crate] = input.parse()?;
                syn::Ident::new("crate", token.span)
            } else {
                input
                    .parse()
                    .map_err(|err| syn::Error::new(err.span(), VALID))?
            };
            input.parse::<Token![=]>().map_err(|err| {
                syn::Error::new(err.span(), format!("expected `{name} = ...`: {VALID}"))
            })?;
            let value: Expr = input.parse()?;
            match name.to_string().as_str() {
                "crate" if krate.is_none() => krate = Some(path_value(value, "crate")?),
                "limit" if limit.is_none() => limit = Some(path_value(value, "limit")?),
                "crate" | "limit" => {
                    return Err(syn::Error::new(
                        name.span(),
                        format!("`{name}` is given twice"),
                    ));
                }
                _ => {
                    return Err(syn::Error::new(
                        name.span(),
                        format!("unknown argument `{name}`: {VALID}"),
                    ));
                }
            }
            if !input.is_empty() {
                input.parse::<Token![,]>()?;
            }
        }
        Ok(Args {
            krate: krate.unwrap_or_else(|| parse_quote!(::blocking_first)),
            limit,
        })
    }
}

/// A path, given bare (`limit = DB`) or, for `crate`, also as a string (`crate = "::bf"`).
fn path_value(value: Expr, name: &str) -> syn::Result<Path> {
    match value {
        Expr::Path(path) if path.qself.is_none() => Ok(path.path),
        Expr::Lit(ExprLit {
            lit: Lit::Str(lit), ..
        }) if name == "crate" => lit.parse(),
        Expr::Lit(ExprLit {
            lit: Lit::Str(lit), ..
        }) => Err(syn::Error::new(
            lit.span(),
            format!(
                "`limit` takes the path of a `static Limit`, not a string: declare \
                 `static {upper}: blocking_first::limit::Limit = Limit::new({value:?}, N);` \
                 and write `limit = {upper}`",
                upper = lit.value().to_uppercase(),
                value = lit.value()
            ),
        )),
        other => Err(syn::Error::new_spanned(
            other,
            format!("`{name}` takes a path, e.g. `{name} = my::path`"),
        )),
    }
}
