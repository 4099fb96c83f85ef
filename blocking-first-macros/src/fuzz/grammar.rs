//! The grammar of generated functions: its state, and the regions it places.

use super::*;

/// Where a fragment is being generated, as far as the macro's checks are concerned.
#[derive(Clone, Copy, Default)]
pub(super) struct Ctx {
    /// Inside an `io!` region that the macro rewrites.
    pub(super) io: bool,
    /// Inside a `parallel!` branch that the macro checks.
    pub(super) branch: bool,
    /// Inside a closure or an async block.
    pub(super) closure: bool,
    /// Inside another macro's arguments.
    pub(super) mac: bool,
    /// Inside the arguments of a macro that the attribute scans token by token for hidden
    /// regions (one written where the body's own code is rewritten): any region in it, at any
    /// depth, is reported.
    pub(super) scanned: bool,
    /// Code the macro never examines: nested items, contents of a region it reports or leaves
    /// alone.
    pub(super) unseen: bool,
    /// Labels of the enclosing loops (`Some`) and labeled blocks; `None` is an unlabeled loop.
    pub(super) loops: u8,
    pub(super) depth: u8,
}

/// A generated function and what the macro must say about it.
pub(super) struct Generated {
    pub(super) args: String,
    pub(super) item: String,
    /// The macro must report an error (a `compile_error!` in its output).
    pub(super) must_error: bool,
}

/// What the macro does with a region at some place.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Placement {
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
pub(super) struct Gen<'r> {
    pub(super) rng: &'r mut Rng,
    pub(super) must_error: bool,
    /// Generate only what the macro accepts (misplaced regions become plain values).
    pub(super) tame: bool,
    /// How regions may be written with the chosen `crate = ..` argument.
    pub(super) region_paths: Vec<&'static str>,
    /// Labels in scope, innermost last: (name, is_loop).
    pub(super) labels: Vec<(String, bool)>,
    pub(super) next_label: usize,
}

pub(super) const LEAVES: &[&str] = &[
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

pub(super) const AWAITED: &[&str] = &[
    "fetch()",
    "tokio::task::yield_now()",
    "client.get(url).send()",
];

impl Gen<'_> {
    pub(super) fn flag(&mut self) {
        self.must_error = true;
    }

    /// What the macro does with a region written here.
    pub(super) fn placement(ctx: Ctx) -> Placement {
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
    pub(super) fn place_region(&mut self, ctx: Ctx) -> Option<bool> {
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

    pub(super) fn region_path(&mut self, name: &str) -> String {
        let prefix = self.rng.pick(&self.region_paths.clone());
        format!("{prefix}{name}!")
    }

    pub(super) fn label(&mut self, is_loop: bool) -> String {
        self.next_label += 1;
        let name = format!("'l{}", self.next_label);
        self.labels.push((name.clone(), is_loop));
        name
    }

    pub(super) fn io(&mut self, ctx: Ctx, stmt: bool) -> String {
        let form = self.rng.below(3);
        self.io_in(ctx, stmt, form)
    }

    /// `form`: 0 parentheses, 1 brackets, 2 braces.
    pub(super) fn io_in(&mut self, ctx: Ctx, stmt: bool, form: usize) -> String {
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

    pub(super) fn parallel(&mut self, ctx: Ctx) -> String {
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

    pub(super) fn awaited(&mut self, ctx: Ctx) -> String {
        if !ctx.unseen && ctx.branch && !ctx.closure && !ctx.mac {
            if self.tame {
                return self.rng.pick(LEAVES).into();
            }
            self.flag();
        }
        format!("{}.await", self.rng.pick(AWAITED))
    }

    pub(super) fn block(&mut self, ctx: Ctx) -> String {
        format!("{{ {} }}", self.stmts(ctx, true))
    }

    pub(super) fn stmts(&mut self, ctx: Ctx, tail: bool) -> String {
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

    pub(super) fn deeper(ctx: Ctx) -> Ctx {
        Ctx {
            depth: ctx.depth + 1,
            ..ctx
        }
    }
}
