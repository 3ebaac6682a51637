//! PGMRPL: the lowest read point any compute still uses, below which storage may drop versions.
//!
//! Computes report the lowest read point they still use (`ReportReadPoint`); a report holds for
//! a TTL unless renewed, so a compute that vanished stops pinning versions after a while.
//! Computes that never reported (a statement that started a moment ago) are covered by a second
//! bound: each segment keeps versions back to the materialized point it had one TTL ago, since
//! a read point is at most the VDL when it is taken. PGMRPL is the lower of the two bounds.
//! For the first TTL after a node starts nothing is dropped, so computes can re-report.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sixfold_log_service::Lsn;

use crate::error::StorageError;
use crate::limits::READ_POINTS_MAX;

/// The read points reported to one storage node (they apply to all its segments: LSNs are
/// volume-wide).
pub struct ReadPoints {
    ttl: Duration,
    reports: Mutex<HashMap<u64, (Lsn, Instant)>>,
}

impl ReadPoints {
    pub fn new(ttl: Duration) -> ReadPoints {
        ReadPoints {
            ttl,
            reports: Mutex::new(HashMap::new()),
        }
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Records (or renews) `compute`'s lowest read point.
    pub fn report(&self, compute: u64, read_point: Lsn) -> Result<(), StorageError> {
        let now = Instant::now();
        let mut reports = self.reports.lock().expect("read points lock poisoned");
        reports.retain(|_, (_, at)| now.duration_since(*at) < self.ttl);
        if reports.len() >= READ_POINTS_MAX && !reports.contains_key(&compute) {
            return Err(StorageError::Behind(format!(
                "{READ_POINTS_MAX} computes already hold read points"
            )));
        }
        reports.insert(compute, (read_point, now));
        Ok(())
    }

    /// The lowest unexpired report, if any.
    pub fn lowest(&self) -> Option<Lsn> {
        let now = Instant::now();
        let mut reports = self.reports.lock().expect("read points lock poisoned");
        reports.retain(|_, (_, at)| now.duration_since(*at) < self.ttl);
        reports.values().map(|(l, _)| *l).min()
    }
}

/// One segment's materialized point over the last TTL: the bound for computes that did not
/// report. Holds a bounded number of samples.
#[derive(Debug, Default)]
pub struct Horizon {
    samples: VecDeque<(Instant, Lsn)>,
}

/// Samples kept per TTL.
const SAMPLES_PER_TTL: u32 = 16;

impl Horizon {
    pub fn sample(&mut self, now: Instant, materialized: Lsn, ttl: Duration) {
        let spacing = ttl / SAMPLES_PER_TTL;
        if self
            .samples
            .back()
            .is_none_or(|(at, _)| now.duration_since(*at) >= spacing)
        {
            self.samples.push_back((now, materialized));
        }
        // Keep only the newest sample that is at least one TTL old, and those after it.
        while self
            .samples
            .get(1)
            .is_some_and(|(at, _)| now.duration_since(*at) >= ttl)
        {
            self.samples.pop_front();
        }
        assert!(self.samples.len() <= SAMPLES_PER_TTL as usize + 2);
    }

    /// PGMRPL for this segment: versions at or above it must stay readable.
    pub fn pgmrpl(&self, now: Instant, ttl: Duration, reported: Option<Lsn>) -> Lsn {
        let unreported = match self.samples.front() {
            Some((at, lsn)) if now.duration_since(*at) >= ttl => *lsn,
            _ => Lsn::ZERO,
        };
        unreported.min(reported.unwrap_or(Lsn::MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves PGMRPL is the lower of the reports and the materialized point one TTL ago, and
    // that nothing is dropped before one TTL has passed.
    #[test]
    fn pgmrpl_is_the_lowest_bound() {
        let ttl = Duration::from_secs(10);
        let t0 = Instant::now();
        let mut h = Horizon::default();
        h.sample(t0, Lsn(100), ttl);
        assert_eq!(h.pgmrpl(t0, ttl, None), Lsn::ZERO);
        for i in 1..=40u64 {
            h.sample(t0 + Duration::from_secs(i), Lsn(100 + i * 10), ttl);
        }
        let now = t0 + Duration::from_secs(40);
        assert_eq!(h.pgmrpl(now, ttl, None), Lsn(100 + 30 * 10));
        assert_eq!(h.pgmrpl(now, ttl, Some(Lsn(150))), Lsn(150));
        assert_eq!(h.pgmrpl(now, ttl, Some(Lsn(9999))), Lsn(400));
    }

    // Proves reports expire after the TTL and the lowest live one wins.
    #[test]
    fn reports_expire() {
        let rp = ReadPoints::new(Duration::from_millis(50));
        rp.report(1, Lsn(10)).unwrap();
        rp.report(2, Lsn(5)).unwrap();
        assert_eq!(rp.lowest(), Some(Lsn(5)));
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(rp.lowest(), None);
    }
}
