//! Span timestamps: one counter read at a span's start and one at its end (the
//! TSC where the CPU has an invariant one, else the monotonic clock), turned into
//! wall-clock time off the instrumented path, by the export thread.
//!
//! A [`Converter`] pairs a counter reading with the wall clock at the same moment
//! (an anchor) and converts readings by their distance from it. It re-anchors
//! for readings more than a second after its anchor, so wall-clock adjustments
//! (NTP slewing or stepping) show up in span times within a second, and the
//! counter's calibration error stays below a second's worth.

use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

static CLOCK: OnceLock<quanta::Clock> = OnceLock::new();

/// How far a reading may be after its converter's anchor before a new anchor is
/// taken.
const REANCHOR_NS: u64 = 1_000_000_000;

#[inline]
fn clock() -> &'static quanta::Clock {
    CLOCK.get_or_init(quanta::Clock::new)
}

/// Calibrates the counter against the monotonic clock (once per process; quanta
/// bounds it to a few hundred milliseconds). Called when a provider is built, so
/// that no span pays for it.
pub(crate) fn init() {
    let _ = clock();
}

/// A raw counter reading.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Tick(u64);

/// The counter now.
#[inline]
pub(crate) fn now() -> Tick {
    Tick(clock().raw())
}

/// Turns counter readings into wall-clock times.
#[derive(Debug, Default)]
pub(crate) struct Converter {
    anchor: Option<(u64, SystemTime)>,
}

impl Converter {
    fn reanchor(&mut self) -> (u64, SystemTime) {
        let c = clock();
        // The wall clock read between two counter reads, paired with their middle.
        let before = c.raw();
        let wall = SystemTime::now();
        let after = c.raw();
        let anchor = (before + after.wrapping_sub(before) / 2, wall);
        self.anchor = Some(anchor);
        anchor
    }

    /// The wall-clock time of reading `t`.
    #[inline]
    pub(crate) fn convert(&mut self, t: Tick) -> SystemTime {
        let c = clock();
        let mut anchor = match self.anchor {
            Some(a) => a,
            None => self.reanchor(),
        };
        if t.0 >= anchor.0 {
            let after = c.delta_as_nanos(anchor.0, t.0);
            if after <= REANCHOR_NS {
                return anchor.1 + Duration::from_nanos(after);
            }
            anchor = self.reanchor();
        }
        let (tick, wall) = anchor;
        if t.0 >= tick {
            wall + Duration::from_nanos(c.delta_as_nanos(tick, t.0))
        } else {
            wall.checked_sub(Duration::from_nanos(c.delta_as_nanos(t.0, tick)))
                .unwrap_or(SystemTime::UNIX_EPOCH)
        }
    }
}

thread_local! {
    static LOCAL: std::cell::RefCell<Converter> = const {
        std::cell::RefCell::new(Converter { anchor: None })
    };
}

/// Runs `f` with the calling thread's converter (for the paths that need a
/// span's times before the export thread: observers, and processors other than
/// one batch processor).
pub(crate) fn with_local<R>(f: impl FnOnce(&mut Converter) -> R) -> R {
    let mut f = Some(f);
    LOCAL
        .try_with(|c| (f.take().expect("called once"))(&mut c.borrow_mut()))
        .unwrap_or_else(|_| (f.take().expect("called once"))(&mut Converter::default()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readings_convert_to_the_wall_clock_within_a_millisecond() {
        let mut conv = Converter::default();
        for _ in 0..3 {
            let before = SystemTime::now();
            let t = now();
            let after = SystemTime::now();
            let wall = conv.convert(t);
            let slack = Duration::from_millis(1);
            assert!(
                wall + slack >= before && wall <= after + slack,
                "{wall:?} not in {before:?}..{after:?}"
            );
            std::thread::sleep(Duration::from_millis(600));
        }
    }

    #[test]
    fn later_readings_convert_to_later_times() {
        let mut conv = Converter::default();
        let a = now();
        std::thread::sleep(Duration::from_millis(5));
        let b = now();
        let (wb, wa) = (conv.convert(b), conv.convert(a));
        let d = wb.duration_since(wa).expect("b after a");
        assert!(
            d >= Duration::from_millis(4) && d < Duration::from_millis(100),
            "{d:?}"
        );
    }
}
