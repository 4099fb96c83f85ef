//! The grammar, continued: attribute arguments, signatures, whole functions.

use super::*;

impl Gen<'_> {
    /// Attribute arguments: valid ones set `region_paths`.
    pub(super) fn args(&mut self) -> String {
        self.region_paths = vec!["", "", "", "blocking_first::", "::blocking_first::"];
        let valid = [
            ("", None),
            ("limit = DB", None),
            ("limit = crate::limits::DB,", None),
            ("crate = ::blocking_first", None),
            ("crate = \"::blocking_first\"", None),
            ("crate = bf", Some("bf::")),
            ("limit = DB, crate = ::renamed::bf", Some("bf::")),
            ("crate = \"bf\", limit = DB::<u8>", Some("bf::")),
        ];
        let invalid = [
            "limit",
            "limit =",
            "limit = \"db\"",
            "limit = 8",
            "limit = DB, limit = DB",
            "crate = a, crate = b",
            "foo = 1",
            "crate = \"1 +\"",
            "crate = \"(\"",
            "crate = \"\"",
            "= DB",
            "limit DB",
            ",",
            "limit = DB crate = x",
            "limit = <T as X>::Y",
            "limit = |x| x",
            "self = 1",
            "limit = DB,,",
            "limit = DB; crate = x",
            "(limit = DB)",
        ];
        if self.tame || self.rng.chance(88) {
            let (args, extra) = valid[self.rng.below(valid.len())];
            if let Some(extra) = extra {
                self.region_paths.push(extra);
            }
            args.into()
        } else {
            self.flag();
            self.rng.pick(&invalid).into()
        }
    }

    pub(super) fn signature(&mut self) -> String {
        let mut attrs = String::new();
        for _ in 0..self.rng.below(3) {
            attrs.push_str(self.rng.pick(&[
                "/// Documented.\n",
                "#[doc = \"more\"]",
                "#[allow(clippy::too_many_arguments)]",
                "#[must_use]",
                "#[cfg_attr(test, allow(unused))]",
                "#[axum::debug_handler]",
                "#[tracing::instrument(skip_all)]",
                "#[inline]",
                "#[deprecated = \"x\"]",
            ]));
            attrs.push(' ');
        }
        let vis = self
            .rng
            .pick(&["", "pub", "pub(crate)", "pub(in crate::api)"]);
        let qualifiers = match self.rng.below(16) {
            0 | 1 if self.tame => "async",
            0 => {
                self.flag();
                ""
            }
            1 => {
                self.flag();
                "const async"
            }
            2 => "async unsafe",
            3 => "async extern \"C\"",
            _ => "async",
        };
        let generics = match self.rng.below(12) {
            2 if self.tame => "<T>",
            0 => "<T: Clone + Send + 'static>",
            1 => "<T, const N: usize>",
            2 => {
                self.flag();
                "<'a, T>"
            }
            3 => "<S, B = ()>",
            4 => "<T: Into<String> + Send>",
            _ => "",
        };
        let mut inputs = Vec::new();
        if self.rng.chance(20) {
            inputs.push(match self.rng.below(6) {
                0 => "self",
                1 => "mut self",
                2 => "self: Arc<Self>",
                3 => "self: Box<Self>",
                4 if !self.tame => {
                    self.flag();
                    "&self"
                }
                5 if !self.tame => {
                    self.flag();
                    "self: &Self"
                }
                _ => "self: std::sync::Arc<Self>",
            });
        }
        for _ in 0..self.rng.below(4) {
            inputs.push(match self.rng.below(24) {
                0 => "x: u32",
                1 => "name: String",
                2 => "State(state): State<App>",
                3 => "Path((id, slug)): Path<(u32, String)>",
                4 => "mut items: Vec<u8>",
                5 => "_: ()",
                6 => "f: impl Fn() -> u32 + Send + 'static",
                7 => "s: &'static str",
                8 => "Json(body): Json<serde_json::Value>",
                9 => "t: T",
                10 | 11 if self.tame => "bytes: bytes::Bytes",
                10 => {
                    self.flag();
                    "s: &str"
                }
                11 => {
                    self.flag();
                    "b: Box<dyn Fn() + 'a>"
                }
                // References inside function types are not borrows the argument holds.
                20 => "cb: fn(&str) -> usize",
                21 => "cb: Box<dyn Fn(&str) -> usize + Send + Sync>",
                22 => "cb: Arc<dyn for<'a> Fn(&'a str) -> &'a str + Send + Sync>",
                23 if !self.tame => {
                    self.flag();
                    "cb: &dyn Fn(&str) -> usize"
                }
                12 | 13 => "#[allow(unused)] cfg: Config",
                14 | 15 => "Query(q): Query<HashMap<String, String>>",
                16 => "Extension(pool): Extension<Arc<Pool>>",
                _ => "(a, b): (u8, u8)",
            });
        }
        let output = self.rng.pick(&[
            "",
            "-> ()",
            "-> u32",
            "-> String",
            "-> impl IntoResponse",
            "-> Result<impl std::fmt::Display, Box<dyn std::error::Error + Send + Sync>>",
            "-> Box<dyn std::fmt::Display + Send>",
            "-> !",
            "-> impl Fn() -> u32",
            "-> (u32, impl Sized)",
            "-> Option<T>",
            "-> Result<Json<Page>, AppError>",
            "-> [u8; N]",
        ]);
        let where_clause = self.rng.pick(&[
            "",
            "",
            "where T: Send + 'static",
            "where T: Clone, for<'x> F: Fn(&'x str),",
            "where Self: Sized",
        ]);
        format!(
            "{attrs} {vis} {qualifiers} fn handler {generics} ({}) {output} {where_clause}",
            inputs.join(", ")
        )
    }
}

/// One generated function and the verdict the generator expects.
pub(super) fn generate(rng: &mut Rng) -> Generated {
    let tame = rng.chance(40);
    let mut g = Gen {
        rng,
        must_error: false,
        tame,
        region_paths: Vec::new(),
        labels: Vec::new(),
        next_label: 0,
    };
    let args = g.args();
    let signature = g.signature();
    let body = g.stmts(Ctx::default(), true);
    Generated {
        args,
        item: format!("{signature} {{ {body} }}"),
        must_error: g.must_error,
    }
}

// ---------------------------------------------------------------------------------------------
// Token-level mutations.
