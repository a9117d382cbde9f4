//! Graceful degradation: where a request goes when its endpoint is saturated for the caller's tier.
//!
//! ```text
//!  primary has capacity ─────────────────────────────> Primary
//!  primary saturated ── no fallback ─────────────────> Refuse(NoFallback)        429 + Retry-After
//!                    └─ fallback ── has capacity ────> Fallback(f)               served, response says so
//!                                └─ saturated ───────> Refuse(FallbackSaturated) 429 + Retry-After
//! ```
//!
//! The fallback's saturation is asked through a closure, and only when the primary is saturated, because
//! asking usually means taking tokens from the fallback's bucket: a request served by the primary must not
//! also be charged to its fallback.

/// Where to send the request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route<F> {
    Primary,
    /// Serve from the fallback endpoint and say so in the response (header or metadata).
    Fallback(F),
    /// Refuse with 429 and `Retry-After`.
    Refuse(RefuseReason),
}

/// Why a saturated request is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefuseReason {
    /// The endpoint has no fallback.
    NoFallback,
    /// The fallback is saturated for this tier too.
    FallbackSaturated,
}

impl RefuseReason {
    /// A stable label for metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NoFallback => "no_fallback",
            Self::FallbackSaturated => "fallback_saturated",
        }
    }
}

/// Decides the route. `fallback_saturated` is called at most once, and only when the primary is saturated
/// and a fallback exists.
pub fn route<F>(primary_saturated: bool, fallback: Option<F>, fallback_saturated: impl FnOnce(&F) -> bool) -> Route<F> {
    if !primary_saturated {
        return Route::Primary;
    }
    match fallback {
        None => Route::Refuse(RefuseReason::NoFallback),
        Some(f) if fallback_saturated(&f) => Route::Refuse(RefuseReason::FallbackSaturated),
        Some(f) => Route::Fallback(f),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    #[test]
    fn every_combination() {
        let cases = [
            (false, None, false, Route::Primary),
            (false, Some("cpu"), true, Route::Primary),
            (false, Some("cpu"), false, Route::Primary),
            (true, None, false, Route::Refuse(RefuseReason::NoFallback)),
            (true, Some("cpu"), false, Route::Fallback("cpu")),
            (true, Some("cpu"), true, Route::Refuse(RefuseReason::FallbackSaturated)),
        ];
        for (primary, fallback, fallback_full, expected) in cases {
            assert_eq!(route(primary, fallback, |_| fallback_full), expected, "{primary} {fallback:?} {fallback_full}");
        }
    }

    #[test]
    fn fallback_is_asked_only_when_the_primary_is_saturated() {
        let asked = Cell::new(0);
        let ask = |_: &&str| {
            asked.set(asked.get() + 1);
            false
        };
        assert_eq!(route(false, Some("cpu"), ask), Route::Primary);
        assert_eq!(asked.get(), 0);
        assert_eq!(route(true, Some("cpu"), ask), Route::Fallback("cpu"));
        assert_eq!(asked.get(), 1);
        assert_eq!(route(true, None::<&str>, ask), Route::Refuse(RefuseReason::NoFallback));
        assert_eq!(asked.get(), 1);
    }

    #[test]
    fn reasons_have_stable_labels() {
        assert_eq!(RefuseReason::NoFallback.as_str(), "no_fallback");
        assert_eq!(RefuseReason::FallbackSaturated.as_str(), "fallback_saturated");
    }
}
