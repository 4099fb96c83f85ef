//! Where a `#[blocking_first]` function is, and what is kept per function.

use std::sync::atomic::AtomicU64;

/// Where a `#[blocking_first]` function is: written by the macro as a `static` next to it.
#[doc(hidden)]
#[derive(Debug)]
pub struct Site {
    pub(crate) function: &'static str,
    pub(crate) file: &'static str,
    pub(crate) line: u32,
    /// When each detector last warned about this function (ns from the clock's start, + 1), and
    /// whether a stretch of it ended holding a pooled connection (1).
    pub(crate) warned: [AtomicU64; 3],
    /// Its metric handles, looked up at most once a second.
    #[cfg(feature = "metrics")]
    pub(crate) metrics: SiteMetrics,
}

impl Site {
    /// The function's path (`module::name`), file and line.
    pub const fn new(function: &'static str, file: &'static str, line: u32) -> Site {
        Site {
            function,
            file,
            line,
            warned: [AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)],
            #[cfg(feature = "metrics")]
            metrics: SiteMetrics::new(),
        }
    }
}

/// One function's metric handles (looked up and used by `observe::report`). Looking a metric up
/// by name and labels costs thousands of instructions (hashing the key), so each function keeps
/// its handles and looks them up again at most once a second: a recorder installed after the
/// first bodies ran is picked up within a second.
#[cfg(feature = "metrics")]
pub(crate) struct SiteMetrics(pub(crate) std::sync::RwLock<Option<(u64, Handles)>>);

#[cfg(feature = "metrics")]
impl std::fmt::Debug for SiteMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SiteMetrics")
    }
}

#[cfg(feature = "metrics")]
pub(crate) struct Handles {
    /// Per outcome and per kind, registered at first use: a scrape shows no empty series for a
    /// function that never panicked or never waited for a slot.
    pub(crate) body: [std::sync::OnceLock<metrics::Histogram>; 3],
    pub(crate) segments: [std::sync::OnceLock<metrics::Histogram>; 5],
    pub(crate) after_cancel: std::sync::OnceLock<metrics::Histogram>,
    pub(crate) hops: metrics::Counter,
    pub(crate) in_use: metrics::Gauge,
    pub(crate) waiting: metrics::Gauge,
}

#[cfg(feature = "metrics")]
impl SiteMetrics {
    pub(crate) const fn new() -> SiteMetrics {
        SiteMetrics(std::sync::RwLock::new(None))
    }
}
