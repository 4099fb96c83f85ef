//! The caller's tracing span, carried to every thread that polls the body.
//! Without the `tracing` feature it is a zero-sized stand-in.

#[cfg(feature = "tracing")]
pub(crate) use tracing::Span;

#[cfg(not(feature = "tracing"))]
#[derive(Debug, Clone)]
pub(crate) struct Span;

#[cfg(not(feature = "tracing"))]
impl Span {
    pub(crate) fn current() -> Span {
        Span
    }

    pub(crate) fn enter(&self) -> impl Sized {}
}
