//! Truncation declarations: how a new writer tells segments which LSNs do not exist.
//!
//! A writer that takes over computes the volume's durable point (VDL) and declares the range
//! above it, up to past anything an earlier writer could have allocated, truncated. A
//! declaration is the *complete* set of truncated ranges as of its epoch: a segment adopts a
//! newer declaration wholesale, so records that an older declaration dropped but a newer writer
//! recovered are not dropped again.

use serde::{Deserialize, Serialize};
use sixfold_proto::log as pb;

use crate::limits::DECLARATION_RANGES_MAX;
use crate::types::{Epoch, Lsn};

/// LSNs in `(after, through]` do not exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TruncatedRange {
    pub after: Lsn,
    pub through: Lsn,
}

impl TruncatedRange {
    pub fn contains(&self, lsn: Lsn) -> bool {
        self.after < lsn && lsn <= self.through
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Declaration {
    pub epoch: Epoch,
    /// Sorted by `after`, non-overlapping.
    pub ranges: Vec<TruncatedRange>,
}

impl Declaration {
    pub fn covers(&self, lsn: Lsn) -> bool {
        // Few ranges (one per takeover): a scan from the newest is fastest in practice.
        self.ranges.iter().rev().any(|r| r.contains(lsn))
    }

    /// The range containing `lsn`, if any.
    pub fn range_of(&self, lsn: Lsn) -> Option<TruncatedRange> {
        self.ranges.iter().rev().find(|r| r.contains(lsn)).copied()
    }

    /// The declaration a writer of `epoch` makes after recovering `vdl`: the ranges of `prior`
    /// at or below `vdl`, plus `(vdl, through]`.
    pub fn successor(prior: &Declaration, epoch: Epoch, vdl: Lsn, through: Lsn) -> Declaration {
        assert!(
            epoch > prior.epoch,
            "a declaration must come from a newer epoch"
        );
        assert!(vdl < through);
        let mut ranges: Vec<TruncatedRange> = prior
            .ranges
            .iter()
            .filter(|r| r.through <= vdl)
            .copied()
            .collect();
        ranges.push(TruncatedRange {
            after: vdl,
            through,
        });
        // Old ranges matter only to segments that slept through many takeovers; keep the newest.
        let excess = ranges.len().saturating_sub(DECLARATION_RANGES_MAX);
        ranges.drain(..excess);
        Declaration { epoch, ranges }
    }

    pub fn validate(&self) -> Result<(), &'static str> {
        if self.ranges.len() > DECLARATION_RANGES_MAX {
            return Err("too many truncated ranges");
        }
        let mut last = Lsn::ZERO;
        for r in &self.ranges {
            if r.after >= r.through || r.after < last {
                return Err("truncated ranges must be non-empty, sorted and disjoint");
            }
            last = r.through;
        }
        Ok(())
    }

    pub fn to_proto(&self) -> pb::Declaration {
        pb::Declaration {
            epoch: self.epoch.get(),
            ranges: self
                .ranges
                .iter()
                .map(|r| pb::TruncatedRange {
                    after_lsn: r.after.get(),
                    through_lsn: r.through.get(),
                })
                .collect(),
        }
    }

    pub fn from_proto(p: &pb::Declaration) -> Result<Declaration, &'static str> {
        let d = Declaration {
            epoch: Epoch(p.epoch),
            ranges: p
                .ranges
                .iter()
                .map(|r| TruncatedRange {
                    after: Lsn(r.after_lsn),
                    through: Lsn(r.through_lsn),
                })
                .collect(),
        };
        d.validate()?;
        Ok(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn successor_replaces_ranges_above_the_recovered_vdl() {
        let first = Declaration::successor(&Declaration::default(), Epoch(1), Lsn(10), Lsn(100));
        assert!(first.covers(Lsn(11)) && first.covers(Lsn(100)));
        assert!(!first.covers(Lsn(10)) && !first.covers(Lsn(101)));
        // The next writer recovered past the first range: it keeps it.
        let second = Declaration::successor(&first, Epoch(2), Lsn(150), Lsn(300));
        assert_eq!(second.ranges.len(), 2);
        // A writer that recovered less (the first declaration never reached a quorum) drops it.
        let other = Declaration::successor(&first, Epoch(2), Lsn(5), Lsn(400));
        assert_eq!(
            other.ranges,
            vec![TruncatedRange {
                after: Lsn(5),
                through: Lsn(400)
            }]
        );
        other.validate().unwrap();
    }
}
