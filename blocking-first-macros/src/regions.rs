//! Rewrites a body's `io!` and `parallel!` regions, its `return`s and the `break`/`continue`s that
//! leave a region. Does not descend into closures, async blocks or nested items: a region there
//! becomes a compile error that says to move it.

use std::mem;

use proc_macro2::{Span, TokenStream};
use quote::quote_spanned;
use syn::spanned::Spanned;
use syn::visit_mut::{self, VisitMut};
use syn::{Block, Expr, Ident, Item, Label, Lifetime, Macro, Stmt, parse_quote_spanned};

use crate::forbid::{Forbid, Place};
use crate::parallel;
use crate::scan::{
    Kind, Names, contains_await, contains_io, error_expr, hidden_region, macro_span,
};

/// A loop or labeled block opened inside the current `io!` region.
struct Target {
    label: Option<Lifetime>,
    is_loop: bool,
}

pub(crate) struct Rewriter<'a> {
    names: &'a Names,
    /// `Some` while inside an `io!` region: the break targets opened inside it.
    region: Option<Vec<Target>>,
    /// The expression or block visited next is in tail position: an `io!` there needs no way back.
    tail: bool,
}

impl<'a> Rewriter<'a> {
    pub(crate) fn new(names: &'a Names) -> Self {
        Rewriter {
            names,
            region: None,
            tail: false,
        }
    }

    /// Rewrites a function body, whose tail is in tail position.
    pub(crate) fn rewrite_body(&mut self, body: &mut Block) {
        self.tail = true;
        self.visit_block_mut(body);
    }

    pub(crate) fn region(&mut self, mac: &Macro, tail: bool) -> Expr {
        match Kind::of(mac, &self.names.krate) {
            Some(Kind::Io) => self.io_region(mac, tail),
            Some(Kind::Parallel) => self.parallel_region(mac),
            None => unreachable!("only called on region macros"),
        }
    }

    fn io_region(&mut self, mac: &Macro, tail: bool) -> Expr {
        let span = macro_span(mac);
        if self.region.is_some() {
            return error_expr(syn::Error::new(
                span,
                "`io!` inside `io!`: this code is already async, remove the inner `io!`",
            ));
        }
        let mut stmts = match mac.parse_body_with(Block::parse_within) {
            Ok(stmts) => stmts,
            Err(err) => return error_expr(err),
        };
        // The region's value: its final expression, or a final macro call such as `select!`.
        let mut value = match stmts.pop() {
            Some(Stmt::Expr(value, None)) => Some(value),
            Some(Stmt::Macro(m)) if m.semi_token.is_none() => Some(Expr::Macro(syn::ExprMacro {
                attrs: m.attrs,
                mac: m.mac,
            })),
            last => {
                stmts.extend(last);
                None
            }
        };
        // Decided before rewriting, which adds awaits of its own. A macro may hide an await.
        let value_awaits = value
            .as_ref()
            .is_some_and(|value| matches!(value, Expr::Macro(_)) || contains_await(value));
        let mut block = Block {
            brace_token: syn::token::Brace::default(),
            stmts,
        };
        self.region = Some(Vec::new());
        self.visit_block_mut(&mut block);
        if let Some(value) = &mut value {
            self.visit_expr_mut(value);
        }
        self.region = None;
        let stmts = block.stmts;
        if self.names.plain {
            // Call-site braces: a lint about them would point at code the user did not write.
            return syn::parse_quote!({ #(#stmts)* #value });
        }

        let mode = &self.names.mode;
        let enter = quote_spanned!(span=> #mode.enter_io().await;);
        let mut driven: syn::ExprBlock = if tail {
            parse_quote_spanned!(span=> { #enter #(#stmts)* #value })
        } else {
            self.with_leave(span, enter, stmts, value, value_awaits)
        };
        // The rewritten block takes the span of the region's own braces, so tools see a block
        // that ends in `}` where the user wrote one.
        driven.block.brace_token = syn::token::Brace {
            span: *mac.delimiter.span(),
        };
        Expr::Block(driven)
    }

    fn with_leave(
        &self,
        span: Span,
        enter: TokenStream,
        stmts: Vec<Stmt>,
        value: Option<Expr>,
        value_awaits: bool,
    ) -> syn::ExprBlock {
        let leave = self.leave(span);
        match value {
            // A value that awaits is computed in async mode. One that cannot wait is plain
            // blocking code: it runs after the switch back, which keeps a borrowed temporary in it
            // alive as in an ordinary block (`let s: &str = io! { &String::new() };`).
            Some(value) if value_awaits => {
                let slot = Ident::new("__value", Span::mixed_site());
                parse_quote_spanned!(span=> {
                    #enter #(#stmts)* let #slot = #value; #leave #slot
                })
            }
            value => parse_quote_spanned!(span=> { #enter #(#stmts)* #leave #value }),
        }
    }

    fn parallel_region(&mut self, mac: &Macro) -> Expr {
        let span = macro_span(mac);
        if self.region.is_some() {
            return error_expr(syn::Error::new(
                span,
                "`parallel!` inside `io!`: parallel branches are blocking code; put the \
                 `parallel!` before or after the `io!` region",
            ));
        }
        match parallel::expand(mac, span, self.names) {
            Ok(expr) => expr,
            Err(err) => error_expr(err),
        }
    }

    /// `mode.leave_io().await;`, marked so a region that always diverges does not warn.
    fn leave(&self, span: Span) -> TokenStream {
        let mode = &self.names.mode;
        quote_spanned!(span=> #[allow(unreachable_code)] #mode.leave_io().await;)
    }

    /// Whether a `break`/`continue` with this label jumps out of the current region.
    fn leaves_region(&self, label: Option<&Lifetime>) -> bool {
        let Some(targets) = &self.region else {
            return false;
        };
        !targets.iter().any(|target| match label {
            None => target.is_loop,
            Some(label) => target.label.as_ref() == Some(label),
        })
    }

    /// Loops and labeled blocks: break targets inside a region; outside, a safety net when they
    /// contain a region (a `break` or `continue` hidden in another macro, e.g. `select!`, is not
    /// rewritten): the switch back at the head of every iteration (before a `while` condition)
    /// and after the loop or block.
    fn visit_target(&mut self, expr: &mut Expr, label: Option<Lifetime>, is_loop: bool) {
        if let Some(targets) = &mut self.region {
            targets.push(Target { label, is_loop });
            visit_mut::visit_expr_mut(self, expr);
            if let Some(targets) = &mut self.region {
                targets.pop();
            }
            return;
        }
        let has_io = !self.names.plain && contains_io(expr, &self.names.krate);
        visit_mut::visit_expr_mut(self, expr);
        if !has_io {
            return;
        }
        let span = expr.span();
        let leave = self.leave(span);
        let head: Stmt = syn::parse2(leave.clone()).expect("a statement");
        // The user's attributes go on the whole: in `let __value = #[allow(..)] loop { .. };`
        // they would be attributes on an expression, which are unstable.
        let attrs = match expr {
            Expr::Loop(l) => {
                l.body.stmts.insert(0, head);
                mem::take(&mut l.attrs)
            }
            Expr::ForLoop(l) => {
                l.body.stmts.insert(0, head);
                mem::take(&mut l.attrs)
            }
            Expr::While(l) => {
                let attrs = mem::take(&mut l.attrs);
                let as_loop = while_as_loop(l, &leave);
                *expr = as_loop;
                attrs
            }
            Expr::Block(b) => mem::take(&mut b.attrs),
            _ => Vec::new(),
        };
        let slot = Ident::new("__value", Span::mixed_site());
        *expr = parse_quote_spanned!(span=> #(#attrs)* { let #slot = #expr; #leave #slot });
    }
}

impl VisitMut for Rewriter<'_> {
    fn visit_block_mut(&mut self, block: &mut Block) {
        let tail = mem::take(&mut self.tail);
        let count = block.stmts.len();
        for (index, stmt) in block.stmts.iter_mut().enumerate() {
            let last = index + 1 == count;
            match stmt {
                Stmt::Macro(stmt_mac) if Kind::of(&stmt_mac.mac, &self.names.krate).is_some() => {
                    let in_tail = tail && last && stmt_mac.semi_token.is_none();
                    let mut expr = self.region(&stmt_mac.mac, in_tail);
                    if let Expr::Block(block) = &mut expr {
                        block.attrs = mem::take(&mut stmt_mac.attrs);
                    }
                    // `io! { send().await? }` followed by more code: a statement, whose value is
                    // discarded as if it ended in `;` (a `#[must_use]` value still warns).
                    let semi = match stmt_mac.semi_token {
                        None if !last => Some(syn::Token![;](Span::call_site())),
                        semi => semi,
                    };
                    *stmt = Stmt::Expr(expr, semi);
                }
                Stmt::Macro(stmt_mac) => {
                    if let Some(error) = hidden_region(&stmt_mac.mac) {
                        *stmt = Stmt::Expr(error, stmt_mac.semi_token);
                    }
                }
                Stmt::Expr(expr, None) if last => {
                    self.tail = tail;
                    self.visit_expr_mut(expr);
                }
                _ => {
                    self.tail = false;
                    self.visit_stmt_mut(stmt);
                }
            }
        }
        self.tail = false;
    }

    fn visit_expr_mut(&mut self, expr: &mut Expr) {
        let tail = mem::take(&mut self.tail);
        match expr {
            Expr::Macro(m) if Kind::of(&m.mac, &self.names.krate).is_some() => {
                let mac = m.mac.clone();
                *expr = self.region(&mac, tail);
            }
            Expr::Macro(m) => {
                if let Some(error) = hidden_region(&m.mac) {
                    *expr = error;
                }
            }
            Expr::Closure(closure) => Forbid::new(Place::Closure, self.names, plain_region)
                .visit_expr_mut(&mut closure.body),
            Expr::Async(block) => Forbid::new(Place::AsyncBlock, self.names, plain_region)
                .visit_block_mut(&mut block.block),
            Expr::Return(ret) => {
                if let Some(value) = &mut ret.expr {
                    // `return io! { .. }` leaves the body anyway: no way back needed.
                    self.tail = true;
                    self.visit_expr_mut(value);
                    if !self.names.plain {
                        let (name, ty) = (&self.names.ret, &self.names.ret_ty);
                        let span = value.span();
                        **value = parse_quote_spanned!(span=> { let #name: #ty = #value; #name });
                    }
                }
            }
            Expr::Break(brk) => {
                if let Some(value) = &mut brk.expr {
                    self.visit_expr_mut(value);
                }
                if !self.names.plain && self.leaves_region(brk.label.as_ref()) {
                    let leave = self.leave(brk.span());
                    *expr = parse_quote_spanned!(brk.span()=> { #leave #brk });
                }
            }
            Expr::Continue(cont) => {
                if !self.names.plain && self.leaves_region(cont.label.as_ref()) {
                    let leave = self.leave(cont.span());
                    *expr = parse_quote_spanned!(cont.span()=> { #leave #cont });
                }
            }
            Expr::Loop(l) => {
                let label = l.label.as_ref().map(|Label { name, .. }| name.clone());
                self.visit_target(expr, label, true);
            }
            Expr::While(l) => {
                let label = l.label.as_ref().map(|Label { name, .. }| name.clone());
                self.visit_target(expr, label, true);
            }
            Expr::ForLoop(l) => {
                let label = l.label.as_ref().map(|Label { name, .. }| name.clone());
                self.visit_target(expr, label, true);
            }
            Expr::Block(b) if b.label.is_some() => {
                let label = b.label.as_ref().map(|Label { name, .. }| name.clone());
                self.visit_target(expr, label, false);
            }
            Expr::Block(b) if tail => {
                self.tail = true;
                self.visit_block_mut(&mut b.block);
            }
            Expr::If(i) if tail => {
                self.visit_expr_mut(&mut i.cond);
                self.tail = true;
                self.visit_block_mut(&mut i.then_branch);
                if let Some((_, otherwise)) = &mut i.else_branch {
                    self.tail = true;
                    self.visit_expr_mut(otherwise);
                }
            }
            Expr::Match(m) if tail => {
                self.visit_expr_mut(&mut m.expr);
                for arm in &mut m.arms {
                    if let Some((_, guard)) = &mut arm.guard {
                        self.visit_expr_mut(guard);
                    }
                    self.tail = true;
                    self.visit_expr_mut(&mut arm.body);
                }
            }
            _ => visit_mut::visit_expr_mut(self, expr),
        }
    }

    // Nested items are compiled on their own. A nested function with its own #[blocking_first]
    // drives its own regions; in any other, a region gets an error that says so.
    fn visit_item_mut(&mut self, item: &mut Item) {
        if let Item::Fn(func) = item {
            let annotated = func.attrs.iter().any(|attr| {
                attr.path()
                    .segments
                    .last()
                    .is_some_and(|seg| seg.ident == "blocking_first")
            });
            if !annotated {
                Forbid::new(Place::NestedFn, self.names, plain_region)
                    .visit_block_mut(&mut func.block);
            }
        }
    }
}

/// `while C { .. }` as `loop { leave; if C { .. } else { break } }`: a `continue` hidden in a
/// macro (`select!`) reaches the condition before the body's head, so the switch back goes
/// before the condition, which stays as written. This is how rustc lowers `while` itself, so the
/// condition's temporaries live and drop as they would: wrapping the condition (or a `let`'s
/// scrutinee) in `{ leave; C }` instead dropped its tail temporaries before the body in edition
/// 2024 (a lock guard from `queue.lock().pop()`), and matched a place (`while let Some(ref mut
/// n) = opt`) as a copy of it in every edition.
fn while_as_loop(l: &syn::ExprWhile, leave: &TokenStream) -> Expr {
    let syn::ExprWhile {
        label,
        while_token,
        cond,
        body,
        ..
    } = l;
    // On the `while` keyword, so the `if` follows the edition of the user's code. A body that
    // ends in `continue` would make clippy call the generated `else` redundant.
    parse_quote_spanned!(while_token.span=>
        #label loop {
            #leave
            #[allow(clippy::redundant_else)]
            if #cond #body else { break }
        }
    )
}

/// A region turned into a plain block, for a function that is already rejected.
fn plain_region(names: &Names, mac: &Macro) -> Expr {
    Rewriter::new(names).region(mac, false)
}
