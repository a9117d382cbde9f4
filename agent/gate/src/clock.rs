//! The doors' clocks: the kernel's coarse clocks, read without a hardware timer.
//!
//! Every admission reads the wall clock (validity windows, expiry) and the limiter reads a monotonic one (bucket
//! refill). With `Utc::now()` and `Instant::now()` those two reads were ~60 ns of a ~490 ns decision: each is a
//! vDSO call that reads the TSC and scales it, plus chrono's calendar conversion. The coarse clocks
//! (`CLOCK_REALTIME_COARSE`, `CLOCK_MONOTONIC_COARSE`) return the time the kernel stored at its last tick, a
//! plain memory read, and the calendar conversion is done once per tick per thread. nginx (its cached
//! `ngx_current_msec`), Envoy (the dispatcher's approximate time) and HAProxy (`now_ms`) make the same trade.
//!
//! The price is resolution: one kernel tick (1-10 ms; 4 ms at HZ=250). A key or token is still refused at most one
//! tick after it expires, a bucket refills in tick-sized steps, and a key that became valid in the last tick is
//! accepted ([`ADMISSION_SLACK`]): its issuer's precise clock may be ahead of ours by up to a tick. Elsewhere
//! (audit record times, stream deadlines, latency metrics) the precise clocks stay.
use chrono::{DateTime, Utc};
use std::cell::Cell;

/// How far ahead of the coarse wall clock a key's `valid_from` may be and still count as reached: more than a
/// kernel tick (CONFIG_HZ >= 100), far less than any rotation overlap.
pub const ADMISSION_SLACK: chrono::TimeDelta = chrono::TimeDelta::milliseconds(20);

#[cfg(any(target_os = "linux", target_os = "android"))]
mod coarse {
    use rustix::time::{ClockId, clock_gettime};

    /// Seconds and nanoseconds since the Unix epoch, at the last kernel tick.
    #[inline]
    pub fn wall() -> (i64, u32) {
        let ts = clock_gettime(ClockId::RealtimeCoarse);
        (ts.tv_sec, ts.tv_nsec as u32)
    }

    /// Seconds since boot (any fixed origin will do), at the last kernel tick.
    #[inline]
    pub fn monotonic() -> f64 {
        let ts = clock_gettime(ClockId::MonotonicCoarse);
        ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
    }
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
mod coarse {
    //! Where the kernel has no coarse clock (a laptop running standalone mode), the precise ones.
    use std::sync::OnceLock;
    use std::time::{Instant, SystemTime, UNIX_EPOCH};

    pub fn wall() -> (i64, u32) {
        let since = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        (since.as_secs() as i64, since.subsec_nanos())
    }

    pub fn monotonic() -> f64 {
        static ORIGIN: OnceLock<Instant> = OnceLock::new();
        ORIGIN.get_or_init(Instant::now).elapsed().as_secs_f64()
    }
}

thread_local! {
    /// The last coarse reading and its calendar form: the clock moves once per tick, so nearly every read
    /// converts nothing.
    static LAST: Cell<((i64, u32), DateTime<Utc>)> = const { Cell::new(((0, 0), DateTime::<Utc>::UNIX_EPOCH)) };
}

/// The wall clock for admission decisions (validity windows, policy expiry, token expiry), to one kernel tick.
#[inline]
pub fn now() -> DateTime<Utc> {
    let reading = coarse::wall();
    LAST.with(|last| {
        let (seen, at) = last.get();
        if seen == reading {
            return at;
        }
        let at = DateTime::from_timestamp(reading.0, reading.1).unwrap_or_else(Utc::now);
        last.set((reading, at));
        at
    })
}

/// Seconds on a monotonic clock with a fixed origin, to one kernel tick: what the limiter's buckets refill by.
#[inline]
pub fn monotonic_seconds() -> f64 {
    coarse::monotonic()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_coarse_wall_clock_is_within_a_tick_of_the_precise_one_and_never_ahead_of_it() {
        for _ in 0..1000 {
            let coarse = now();
            let precise = Utc::now();
            assert!(coarse <= precise + chrono::TimeDelta::milliseconds(1), "coarse {coarse} vs precise {precise}");
            assert!(
                precise - coarse < ADMISSION_SLACK,
                "coarse {coarse} lags precise {precise} by more than the slack"
            );
        }
    }

    #[test]
    fn the_coarse_monotonic_clock_moves_forward_with_time() {
        let start = monotonic_seconds();
        let mut last = start;
        let until = std::time::Instant::now() + std::time::Duration::from_millis(60);
        while std::time::Instant::now() < until {
            let t = monotonic_seconds();
            assert!(t >= last, "went back from {last} to {t}");
            last = t;
        }
        // 60 ms passed; a tick is at most 10 ms.
        assert!(last - start >= 0.04, "moved only {} s in 60 ms", last - start);
    }
}
