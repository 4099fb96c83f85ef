//! Regions where none can be driven -- inside a closure, an async block or a nested function --
//! become compile errors that say what to do.

use syn::visit_mut::{self, VisitMut};
use syn::{Expr, Item, Macro, Stmt};

use crate::scan::{Kind, Names, error_expr, macro_span};

/// Where a region cannot be driven.
#[derive(Clone, Copy)]
pub(crate) enum Place {
    Closure,
    AsyncBlock,
    NestedFn,
}

/// Replaces every region inside a closure, async block or nested function with an error that
/// says what to do.
pub(crate) struct Forbid<'a> {
    place: Place,
    names: &'a Names,
    /// How a region becomes a plain block when the function is rejected already (the
    /// rewriter's job, passed in so this file does not depend on it).
    plain: fn(&Names, &Macro) -> Expr,
}

impl<'a> Forbid<'a> {
    pub(crate) fn new(place: Place, names: &'a Names, plain: fn(&Names, &Macro) -> Expr) -> Self {
        Forbid {
            place,
            names,
            plain,
        }
    }

    fn error(&self, mac: &Macro) -> Option<Expr> {
        let kind = Kind::of(mac, &self.names.krate)?;
        if self.names.plain {
            // The function is already rejected: strip the region quietly instead of piling on.
            return Some((self.plain)(self.names, mac));
        }
        let name = kind.name();
        let message = match self.place {
            Place::Closure => format!(
                "`{name}` cannot be used inside a closure: the closure may run later or on \
                 another thread; move the region into the body of the #[blocking_first] function"
            ),
            Place::AsyncBlock => format!(
                "`{name}` cannot be used inside an async block: the block may run later or \
                 elsewhere; move the region into the body of the #[blocking_first] function{}",
                if kind == Kind::Io {
                    " (an async block is async already: `.await` works in it directly)"
                } else {
                    ""
                }
            ),
            Place::NestedFn => format!(
                "`{name}` cannot be used inside a nested function: only the function carrying \
                 #[blocking_first] is rewritten; put #[blocking_first] on the nested `async fn` \
                 too, or move the region into the outer body"
            ),
        };
        Some(error_expr(syn::Error::new(macro_span(mac), message)))
    }
}

impl VisitMut for Forbid<'_> {
    fn visit_expr_mut(&mut self, expr: &mut Expr) {
        if let Expr::Macro(m) = expr {
            if let Some(error) = self.error(&m.mac) {
                *expr = error;
                return;
            }
        }
        visit_mut::visit_expr_mut(self, expr);
    }

    fn visit_stmt_mut(&mut self, stmt: &mut Stmt) {
        if let Stmt::Macro(m) = stmt {
            if let Some(error) = self.error(&m.mac) {
                *stmt = Stmt::Expr(error, m.semi_token);
                return;
            }
        }
        visit_mut::visit_stmt_mut(self, stmt);
    }

    fn visit_item_mut(&mut self, _item: &mut Item) {}
}
