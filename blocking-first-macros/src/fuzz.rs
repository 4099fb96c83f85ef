//! The macro never panics: thousands of generated `async fn`s (regions in odd places, labels,
//! `let`-`else`, closures, async blocks, other macros, attributes, generics, receivers, valid and
//! invalid attribute arguments) and token-level mutations of them (deleted, duplicated, swapped,
//! inserted tokens, changed delimiters, invisible groups, truncation) go through
//! [`expand::blocking_first`]. Each expansion must return; when the input was a function, the
//! output must parse as items; when the input was bad, the output must carry a `compile_error!`;
//! when the generator knows the input is accepted, the output must carry none and every region
//! must be rewritten.
//!
//! The default run is fixed and deterministic. Explore further with
//! `BLOCKING_FIRST_FUZZ_SEED=<u64> BLOCKING_FIRST_FUZZ_CASES=<n> cargo test -p
//! blocking-first-macros fuzz -- --nocapture`; a failure prints its input, shrunk.

use std::cell::Cell;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Once;
use std::time::Instant;

use proc_macro2::{Delimiter, Group, TokenStream, TokenTree};
use syn::visit::{self, Visit};

use crate::args::Args;
use crate::expand;
use crate::signature;

/// xorshift64: small, deterministic, good enough to pick fragments.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        // splitmix64 finaliser, so that nearby seeds give unrelated streams (and never 0).
        let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        Rng((z ^ (z >> 31)) | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
}

/// Where a fragment is being generated, as far as the macro's checks are concerned.
#[derive(Clone, Copy, Default)]
struct Ctx {
    /// Inside an `io!` region that the macro rewrites.
    io: bool,
    /// Inside a `parallel!` branch that the macro checks.
    branch: bool,
    /// Inside a closure or an async block.
    closure: bool,
    /// Inside another macro's arguments.
    mac: bool,
    /// Inside the arguments of a macro that the attribute scans token by token for hidden
    /// regions (one written where the body's own code is rewritten): any region in it, at any
    /// depth, is reported.
    scanned: bool,
    /// Code the macro never examines: nested items, contents of a region it reports or leaves
    /// alone.
    unseen: bool,
    /// Labels of the enclosing loops (`Some`) and labeled blocks; `None` is an unlabeled loop.
    loops: u8,
    depth: u8,
}

/// A generated function and what the macro must say about it.
struct Generated {
    args: String,
    item: String,
    /// The macro must report an error (a `compile_error!` in its output).
    must_error: bool,
}

/// What the macro does with a region at some place.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Placement {
    /// Rewritten: driven as a region.
    Rewritten,
    /// Left as written (rustc reports the fallback macro later, or a nested function with its
    /// own attribute drives it).
    Left,
    /// Replaced with a compile error.
    Reported,
}

/// Grammar of fragments. Tracks, for every fragment it places, whether the macro is specified to
/// reject it at that place.
struct Gen<'r> {
    rng: &'r mut Rng,
    must_error: bool,
    /// Generate only what the macro accepts (misplaced regions become plain values).
    tame: bool,
    /// How regions may be written with the chosen `crate = ..` argument.
    region_paths: Vec<&'static str>,
    /// Labels in scope, innermost last: (name, is_loop).
    labels: Vec<(String, bool)>,
    next_label: usize,
}

const LEAVES: &[&str] = &[
    "1",
    // Locals named like the regions, next to a `!` that is not a region's (`!=`): no region.
    "(io != 0)",
    "(parallel!= io)",
    "!io",
    "x",
    "name.len()",
    "()",
    "\"text\".to_string()",
    "state.0",
    "Default::default()",
    "v",
    "db.query(id)",
    "-1i64",
    "r#type",
    "[0u8; 4]",
];

const AWAITED: &[&str] = &[
    "fetch()",
    "tokio::task::yield_now()",
    "client.get(url).send()",
];

impl Gen<'_> {
    fn flag(&mut self) {
        self.must_error = true;
    }

    /// What the macro does with a region written here.
    fn placement(ctx: Ctx) -> Placement {
        if ctx.scanned {
            return Placement::Reported;
        }
        if ctx.unseen || ctx.mac {
            // Nested items, contents of regions already reported, and macros inside closures or
            // branches are not looked into (rustc meets the fallback macro later).
            return Placement::Left;
        }
        if ctx.closure {
            // Closures, async blocks and nested `fn`s are scanned for regions, except inside a
            // parallel branch (the branch check does not descend into closures).
            return if ctx.branch {
                Placement::Left
            } else {
                Placement::Reported
            };
        }
        if ctx.branch || ctx.io {
            return Placement::Reported;
        }
        Placement::Rewritten
    }

    /// Places a region: `None` if a tame generator must not write it here; otherwise whether the
    /// macro rewrites it (its contents are then checked), recording an expected error.
    fn place_region(&mut self, ctx: Ctx) -> Option<bool> {
        match Self::placement(ctx) {
            Placement::Reported if self.tame => None,
            Placement::Reported => {
                self.flag();
                Some(false)
            }
            Placement::Left => Some(false),
            Placement::Rewritten => Some(true),
        }
    }

    fn region_path(&mut self, name: &str) -> String {
        let prefix = self.rng.pick(&self.region_paths.clone());
        format!("{prefix}{name}!")
    }

    fn label(&mut self, is_loop: bool) -> String {
        self.next_label += 1;
        let name = format!("'l{}", self.next_label);
        self.labels.push((name.clone(), is_loop));
        name
    }

    fn io(&mut self, ctx: Ctx, stmt: bool) -> String {
        let form = self.rng.below(3);
        self.io_in(ctx, stmt, form)
    }

    /// `form`: 0 parentheses, 1 brackets, 2 braces.
    fn io_in(&mut self, ctx: Ctx, stmt: bool, form: usize) -> String {
        let Some(rewritten) = self.place_region(ctx) else {
            let value = self.rng.pick(LEAVES);
            return if stmt {
                format!("{value};")
            } else {
                value.into()
            };
        };
        let inner = Ctx {
            io: rewritten,
            unseen: !rewritten || ctx.unseen,
            depth: ctx.depth + 1,
            ..ctx
        };
        let path = self.region_path("io");
        let mut body = match self.rng.below(12) {
            0 => String::new(),
            1 if rewritten && !self.tame => {
                // Not a statement list: the region is reported.
                self.flag();
                "let = ;".to_string()
            }
            2 => format!("{}?", self.awaited(inner)),
            _ => self.stmts(inner, true),
        };
        if self.rng.chance(20) {
            body = format!("{} {body}", self.stmt(inner));
        }
        match (stmt, form) {
            (true, 0) => format!("{path} ( {body} );"),
            (true, 1) => format!("{path} [ {body} ];"),
            (true, _) => format!("{path} {{ {body} }}"),
            (false, 0) => format!("{path} ( {body} )"),
            (false, 1) => format!("{path} [ {body} ]"),
            (false, _) => format!("{path} {{ {body} }}"),
        }
    }

    fn parallel(&mut self, ctx: Ctx) -> String {
        let Some(rewritten) = self.place_region(ctx) else {
            return format!("({}, {})", self.rng.pick(LEAVES), self.rng.pick(LEAVES));
        };
        let inner = Ctx {
            branch: rewritten,
            unseen: !rewritten || ctx.unseen,
            depth: ctx.depth + 1,
            ..ctx
        };
        let path = self.region_path("parallel");
        let branches = match self.rng.below(14) {
            0 | 1 if self.tame && rewritten => self.expr(inner),
            0 => {
                if rewritten {
                    self.flag(); // empty
                }
                String::new()
            }
            1 => {
                if rewritten {
                    self.flag(); // not a list of expressions
                }
                self.rng
                    .pick(&[", a", "a,, b", "a b", "let x = 1;"])
                    .to_string()
            }
            n => {
                let count = 1 + n % 3;
                let mut all = Vec::new();
                for _ in 0..count {
                    all.push(self.expr(inner));
                }
                let trailing = if self.rng.chance(50) { "," } else { "" };
                format!("{}{trailing}", all.join(", "))
            }
        };
        format!("{path} {{ {branches} }}")
    }

    fn awaited(&mut self, ctx: Ctx) -> String {
        if !ctx.unseen && ctx.branch && !ctx.closure && !ctx.mac {
            if self.tame {
                return self.rng.pick(LEAVES).into();
            }
            self.flag();
        }
        format!("{}.await", self.rng.pick(AWAITED))
    }

    fn block(&mut self, ctx: Ctx) -> String {
        format!("{{ {} }}", self.stmts(ctx, true))
    }

    fn stmts(&mut self, ctx: Ctx, tail: bool) -> String {
        let count = if ctx.depth > 3 {
            self.rng.below(2)
        } else {
            self.rng.below(4)
        };
        let mut out = Vec::new();
        for _ in 0..count {
            out.push(self.stmt(ctx));
        }
        if tail && self.rng.chance(60) {
            out.push(self.expr(ctx));
        }
        out.join(" ")
    }

    fn deeper(ctx: Ctx) -> Ctx {
        Ctx {
            depth: ctx.depth + 1,
            ..ctx
        }
    }

    fn stmt(&mut self, ctx: Ctx) -> String {
        let d = Self::deeper(ctx);
        if ctx.depth > 4 {
            return format!("let x = {};", self.rng.pick(LEAVES));
        }
        match self.rng.below(26) {
            0 | 1 => format!("let x = {};", self.expr(d)),
            2 => format!("let mut total: u32 = {};", self.expr(d)),
            3 => format!("{};", self.expr(d)),
            4 | 5 => self.io(d, true),
            6 => format!("let (a, b) = {};", self.parallel(d)),
            7 => {
                let label = self.label(true);
                let inner = Ctx {
                    loops: ctx.loops + 1,
                    ..d
                };
                let body = self.block(inner);
                self.labels.pop();
                match self.rng.below(12) {
                    0 | 1 => format!("{label}: loop {body}"),
                    2 | 3 => format!("for i in 0..3 {body}"),
                    4 | 5 => format!("{label}: for (i, v) in items.iter().enumerate() {body}"),
                    6 | 7 => format!("while total < 10 {body}"),
                    8 | 9 => format!("{label}: while let Some(v) = it.next() {body}"),
                    10 => format!("loop {body}"),
                    // An edition-2024 let chain in the condition.
                    _ => format!("while let Some(v) = it.next() && v > 1 {body}"),
                }
            }
            8 => format!(
                "if ({}) {} else {}",
                self.expr(d),
                self.block(d),
                self.block(d)
            ),
            9 => format!(
                "match ({}) {{ 0 => {}, 1 => {} _ if ({}) => {}, _ => {} }}",
                self.expr(d),
                self.expr(d),
                self.block(d),
                self.expr(d),
                self.io(d, false),
                self.expr(d)
            ),
            10 => {
                // An initializer may not end in `}`: a region in parentheses, or a parenthesised
                // expression.
                let init = if self.rng.chance(50) {
                    self.io_in(d, false, 0)
                } else {
                    format!("({})", self.expr(d))
                };
                format!("let Some(v) = {init} else {{ return Default::default(); }};")
            }
            11 => {
                let attr = self.rng.pick(&[
                    "#[allow(unused)]",
                    "#[cfg(any())]",
                    "#[rustfmt::skip]",
                    "#[allow(clippy::all)] #[cfg_attr(test, allow(dead_code))]",
                    "/// a doc comment on a statement\n",
                ]);
                let stmt = match self.rng.below(3) {
                    0 => self.io(d, true),
                    1 => format!("let x = {};", self.expr(d)),
                    _ => format!("{};", self.expr(d)),
                };
                format!("{attr} {stmt}")
            }
            12 | 13 => self.foreign_macro(d),
            14 => {
                let inner = Ctx { closure: true, ..d };
                match self.rng.below(5) {
                    0 => format!("let f = || {};", self.expr(inner)),
                    1 => format!("let f = move |x: u32| -> u32 {};", self.block(inner)),
                    2 => format!("let fut = async move {};", self.block(inner)),
                    3 => format!("let f = async || {};", self.expr(inner)),
                    _ => format!("items.iter().for_each(|v| {});", self.block(inner)),
                }
            }
            15 => {
                // Nested items are compiled on their own: the macro leaves them alone, except
                // that a nested `fn` written where the body is rewritten is scanned for regions.
                let inner = Ctx {
                    unseen: true,
                    loops: 0,
                    ..d
                };
                let nested_fn = Ctx {
                    closure: true,
                    loops: 0,
                    ..d
                };
                let saved = std::mem::take(&mut self.labels);
                let item = match self.rng.below(4) {
                    0 if Self::rewritten_level(d) => {
                        format!("fn helper() -> u32 {}", self.block(nested_fn))
                    }
                    0 => format!("fn helper() -> u32 {}", self.block(inner)),
                    1 => format!(
                        "struct S; impl S {{ async fn f(&self) {} }}",
                        self.block(inner)
                    ),
                    2 => format!("const C: u32 = {};", self.expr(inner)),
                    _ => format!("mod m {{ pub fn f() {} }}", self.block(inner)),
                };
                self.labels = saved;
                item
            }
            16 => format!("return {};", self.expr(d)),
            17 => "return;".to_string(),
            18 => self.jump(d),
            19 => format!("({})?;", self.expr(d)),
            20 => {
                let label = self.label(false);
                let body = self.stmts(d, false);
                let value = self.expr(d);
                self.labels.pop();
                format!("let v = {label}: {{ {body} break {label} ({value}); }};")
            }
            21 => format!("drop({});", self.awaited(d)),
            22 => format!("total += {};", self.io(d, false)),
            23 => ";".to_string(),
            24 => "let __bf = 1; let __ret = __bf;".to_string(),
            _ => format!("let v = {};", self.expr(d)),
        }
    }

    /// `break`/`continue`, to a loop or block in scope (or to none, for the odd case).
    fn jump(&mut self, ctx: Ctx) -> String {
        let labels = self.labels.clone();
        if labels.is_empty() || self.rng.chance(10) {
            return self
                .rng
                .pick(&["break;", "continue;", "break 'nowhere;"])
                .into();
        }
        let (label, is_loop) = &labels[self.rng.below(labels.len())];
        match (is_loop, self.rng.below(4)) {
            (true, 0) if ctx.loops > 0 => "continue;".into(),
            (true, 1) if ctx.loops > 0 => "break;".into(),
            (true, 2) => format!("continue {label};"),
            (true, _) => format!("break {label};"),
            (false, _) => format!("break {label} ({});", self.rng.pick(LEAVES)),
        }
    }

    /// Whether this is code the attribute rewrites (the body, its `io!` regions).
    fn rewritten_level(ctx: Ctx) -> bool {
        !ctx.unseen && !ctx.closure && !ctx.branch && !ctx.mac
    }

    fn in_macro(ctx: Ctx) -> Ctx {
        Ctx {
            mac: true,
            scanned: ctx.scanned || Self::rewritten_level(ctx),
            ..ctx
        }
    }

    fn foreign_macro(&mut self, ctx: Ctx) -> String {
        let m = Self::in_macro(ctx);
        match self.rng.below(7) {
            0 => format!("assert_eq!({}, {});", self.expr(m), self.expr(m)),
            1 => format!("println!(\"{{}}\", {});", self.expr(m)),
            2 => format!(
                "tokio::select! {{ v = {} => {}, _ = stop.changed() => {{ break; }} }}",
                self.expr(m),
                self.block(m)
            ),
            3 => format!("let v = vec![{}, {}];", self.expr(m), self.expr(m)),
            4 => format!("write!(out, \"{{}}\", {})?;", self.expr(m)),
            5 => format!("let ok = matches!({}, Some(_));", self.expr(m)),
            _ => format!("tracing::info!(value = ?{}, \"seen\");", self.expr(m)),
        }
    }

    fn expr(&mut self, ctx: Ctx) -> String {
        let d = Self::deeper(ctx);
        if ctx.depth > 4 {
            return self.rng.pick(LEAVES).into();
        }
        match self.rng.below(30) {
            0..=5 => self.rng.pick(LEAVES).into(),
            6 | 7 => self.io(d, false),
            8 => self.parallel(d),
            9 => self.awaited(d),
            10 => format!("{{ {} }}", self.stmts(d, true)),
            11 => format!(
                "if ({}) {{ {} }} else {{ {} }}",
                self.expr(d),
                self.expr(d),
                self.expr(d)
            ),
            12 => format!(
                "match ({}) {{ 0 => {}, _ => {} }}",
                self.expr(d),
                self.expr(d),
                self.expr(d)
            ),
            13 => format!("({}, {})", self.expr(d), self.expr(d)),
            14 => format!("({}) + ({})", self.expr(d), self.expr(d)),
            15 => format!("({}).min({})", self.expr(d), self.expr(d)),
            16 => format!("f({})", self.expr(d)),
            17 => format!("&({})", self.expr(d)),
            18 => format!("({})?", self.expr(d)),
            19 => format!("|| {}", self.expr(Ctx { closure: true, ..d })),
            20 => format!("async move {{ {} }}", self.expr(Ctx { closure: true, ..d })),
            21 => format!("S {{ a: {}, ..Default::default() }}", self.expr(d)),
            22 => {
                let label = self.label(false);
                let value = self.expr(d);
                self.labels.pop();
                format!("{label}: {{ break {label} ({value}) }}")
            }
            23 => {
                let label = self.label(true);
                let inner = Ctx {
                    loops: ctx.loops + 1,
                    ..d
                };
                let value = self.expr(inner);
                self.labels.pop();
                format!("{label}: loop {{ break {label} ({value}) }}")
            }
            24 => format!("return {}", self.expr(d)),
            25 => format!("format!(\"{{}}\", {})", self.expr(Self::in_macro(d))),
            26 => format!("({}) as u8", self.expr(d)),
            27 => format!("{{ {} }}.to_string()", self.stmts(d, true)),
            28 => format!("[{}, {}]", self.expr(d), self.expr(d)),
            _ => format!("({})", self.io(d, false)),
        }
    }

    /// Attribute arguments: valid ones set `region_paths`.
    fn args(&mut self) -> String {
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

    fn signature(&mut self) -> String {
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
            inputs.push(match self.rng.below(20) {
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
fn generate(rng: &mut Rng) -> Generated {
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

/// Tokens to insert: the ones the macro cares about most.
const POOL: &[&str] = &[
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

fn pool_tokens(rng: &mut Rng) -> Vec<TokenTree> {
    let source = rng.pick(POOL);
    source
        .parse::<TokenStream>()
        .expect("pool entries lex")
        .into_iter()
        .collect()
}

/// Applies one mutation at a random depth of the stream.
fn mutate(stream: TokenStream, rng: &mut Rng) -> TokenStream {
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

/// Region macros left in the output outside closures, async blocks and nested items: those the
/// macro should have rewritten or reported.
#[derive(Default)]
struct LeftoverRegions(Vec<String>);

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

/// What went wrong with one expansion.
type Failure = String;

thread_local! {
    static QUIET: Cell<bool> = const { Cell::new(false) };
}

/// Keeps the expected panics of this module out of the output; other threads print as usual.
fn quiet_panics() {
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

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_string()))
        .unwrap_or_else(|| "<non-string payload>".into())
}

/// Expands without letting a panic escape.
fn expand_caught(args: &TokenStream, item: &TokenStream) -> Result<TokenStream, String> {
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
enum Expect {
    /// The macro must reject it.
    Error,
    /// The macro must accept it: no `compile_error!`, every region rewritten.
    Accepted,
    /// Mutated: only the structural properties hold.
    Unknown,
}

/// Checks one input against every property; `Err` describes the first one broken.
fn check(args: &TokenStream, item: &TokenStream, expect: Expect) -> Result<(), Failure> {
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
fn shrink(args: &TokenStream, item: &TokenStream, expect: Expect, failure: &str) -> TokenStream {
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
fn count_edits(stream: &TokenStream) -> usize {
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
fn apply_edit(stream: &TokenStream, target: usize, unwrap: bool) -> Option<TokenStream> {
    fn walk(stream: TokenStream, target: &mut usize, unwrap: bool, done: &mut bool) -> TokenStream {
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

fn env_u64(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    let value = value.trim();
    match value.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => value.parse().ok(),
    }
}

/// The run's parameters: a fixed seed and count unless the environment asks for more.
fn parameters() -> (u64, u64) {
    let seed = env_u64("BLOCKING_FIRST_FUZZ_SEED").unwrap_or(0x0b10_c41f_1257);
    let cases = env_u64("BLOCKING_FIRST_FUZZ_CASES").unwrap_or(1500);
    (seed, cases)
}

#[derive(Default)]
struct Tally {
    generated: u64,
    rejected: u64,
    accepted: u64,
    mutated: u64,
    mutated_not_functions: u64,
    failures: Vec<String>,
}

fn run_case(
    tally: &mut Tally,
    label: &str,
    args: &TokenStream,
    item: &TokenStream,
    expect: Expect,
) {
    if let Err(failure) = check(args, item, expect) {
        if tally.failures.len() < 5 {
            let small = shrink(args, item, expect, &failure);
            tally.failures.push(format!(
                "{label} ({expect:?})\n  args: {args}\n  item: {item}\n  shrunk item: {small}\n  \
                 failure: {failure}"
            ));
        } else {
            tally
                .failures
                .push(format!("{label}: {}", failure.lines().next().unwrap_or("")));
        }
    }
}

#[test]
fn the_macro_never_panics_on_generated_and_mutated_functions() {
    let (seed, cases) = parameters();
    let start = Instant::now();
    let mut tally = Tally::default();
    for case in 0..cases {
        let mut rng = Rng::new(seed ^ case.wrapping_mul(0x2545_f491_4f6c_dd1d));
        let generated = generate(&mut rng);
        let label = format!("seed {seed:#x} case {case}");
        let args: TokenStream = generated.args.parse().expect("generated arguments lex");
        let item: TokenStream = generated.item.parse().expect("generated items lex");
        let expect = if generated.must_error {
            Expect::Error
        } else {
            Expect::Accepted
        };
        tally.generated += 1;
        match expect {
            Expect::Error => tally.rejected += 1,
            _ => tally.accepted += 1,
        }
        run_case(&mut tally, &label, &args, &item, expect);

        // The same function, mutated at the token level: two mutants of one to three edits.
        for mutant in 0..2 {
            let (mut margs, mut mitem) = (args.clone(), item.clone());
            for _ in 0..1 + rng.below(3) {
                if rng.chance(85) {
                    mitem = mutate(mitem, &mut rng);
                } else {
                    margs = mutate(margs, &mut rng);
                }
            }
            tally.mutated += 1;
            if syn::parse2::<syn::ItemFn>(mitem.clone()).is_err() {
                tally.mutated_not_functions += 1;
            }
            let label = format!("{label} mutant {mutant}");
            run_case(&mut tally, &label, &margs, &mitem, Expect::Unknown);
        }
    }
    eprintln!(
        "fuzz: seed {seed:#x}, {} generated ({} to reject, {} to accept), {} mutated ({} no \
         longer functions), {} failures, {:?}",
        tally.generated,
        tally.rejected,
        tally.accepted,
        tally.mutated,
        tally.mutated_not_functions,
        tally.failures.len(),
        start.elapsed()
    );
    // The generator must exercise both verdicts, and mutations must break some inputs.
    assert!(
        tally.rejected * 10 > tally.generated,
        "too few rejected inputs"
    );
    assert!(
        tally.accepted * 10 > tally.generated,
        "too few accepted inputs"
    );
    assert!(
        tally.mutated_not_functions > 0,
        "no mutation broke a function"
    );
    assert!(
        tally.failures.is_empty(),
        "{} failing inputs (reproduce with BLOCKING_FIRST_FUZZ_SEED={seed:#x} \
         BLOCKING_FIRST_FUZZ_CASES={cases}):\n{}",
        tally.failures.len(),
        tally.failures.join("\n\n")
    );
}

// ---------------------------------------------------------------------------------------------
// Hand-written inputs the grammar reaches rarely, and the first panics the fuzz test found.

fn expands(args: &str, item: &str) -> String {
    let args: TokenStream = args.parse().unwrap();
    let item: TokenStream = item.parse().unwrap();
    let output = expand_caught(&args, &item).unwrap_or_else(|message| {
        panic!("expanding `{item}` panicked: {message}");
    });
    output.to_string()
}

#[test]
fn truncated_and_garbled_functions_come_back_with_an_error() {
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
fn regions_in_invisible_groups_are_still_rewritten() {
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
fn leading_colon_region_path_does_not_panic() {
    let output = expands("", "async fn f() { ::io! { 1 }; ::parallel!(a, b); }");
    syn::parse2::<syn::File>(output.parse().unwrap()).expect("output parses");
}

/// Found by the fuzz test: the safety net before a `while` condition wrapped a whole let chain
/// in a block, `{ leave; let Some(v) = .. && .. }`, which does not parse.
#[test]
fn while_let_chain_around_a_region_does_not_panic() {
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
fn the_signature_and_every_attribute_pass_through_unchanged() {
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
fn impl_trait_arguments_get_send_and_static() {
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
