//! The grammar, continued: statements, jumps, other macros, expressions.

use super::*;

impl Gen<'_> {
    pub(super) fn stmt(&mut self, ctx: Ctx) -> String {
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
                match self.rng.below(15) {
                    0 | 1 => format!("{label}: loop {body}"),
                    2 | 3 => format!("for i in 0..3 {body}"),
                    4 | 5 => format!("{label}: for (i, v) in items.iter().enumerate() {body}"),
                    6 | 7 => format!("while total < 10 {body}"),
                    8 | 9 => format!("{label}: while let Some(v) = it.next() {body}"),
                    10 => format!("loop {body}"),
                    // A scrutinee whose temporary (a lock guard) lives through the body.
                    11 => format!("while let Some(v) = queue.lock().unwrap().pop() {body}"),
                    // A place: `ref mut` binds into it, not into a copy.
                    12 => format!("{label}: while let Some(ref mut v) = slot {body}"),
                    // Edition-2024 let chains in the condition.
                    13 => format!(
                        "{label}: while let Some(v) = it.next() && let Some(w) = v.checked_sub(1) \
                         && w > 0 {body}"
                    ),
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
    pub(super) fn jump(&mut self, ctx: Ctx) -> String {
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
    pub(super) fn rewritten_level(ctx: Ctx) -> bool {
        !ctx.unseen && !ctx.closure && !ctx.branch && !ctx.mac
    }

    pub(super) fn in_macro(ctx: Ctx) -> Ctx {
        Ctx {
            mac: true,
            scanned: ctx.scanned || Self::rewritten_level(ctx),
            ..ctx
        }
    }

    pub(super) fn foreign_macro(&mut self, ctx: Ctx) -> String {
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

    pub(super) fn expr(&mut self, ctx: Ctx) -> String {
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
}
