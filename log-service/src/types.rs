//! Newtypes for the numbers the whole system talks in. A bare `u64` that means an LSN is a bug
//! waiting to happen, so every domain number has its own type.

use std::fmt;

use serde::{Deserialize, Serialize};

macro_rules! newtype {
    ($(#[$doc:meta])* $name:ident($inner:ty), $prefix:literal) => {
        $(#[$doc])*
        #[derive(
            Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
        )]
        #[serde(transparent)]
        pub struct $name(pub $inner);

        impl $name {
            pub const fn get(self) -> $inner {
                self.0
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!($prefix, "{}"), self.0)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }
    };
}

newtype!(
    /// Log sequence number: one dense, monotonic sequence for the whole volume, assigned by the
    /// writer. Every allocated LSN names exactly one redo record, so "every LSN up to L is
    /// accounted for" is checkable; `Lsn::ZERO` names no record and is the backlink of a PG's
    /// first record.
    Lsn(u64),
    "lsn:"
);
newtype!(
    /// Page number within the volume. Pages are 8 KiB; a PG owns a contiguous range of them.
    PageId(u64),
    "page:"
);
newtype!(
    /// Protection group: a contiguous range of pages kept as six segments.
    PgId(u32),
    "pg:"
);
newtype!(
    /// A storage, meta or compute node.
    NodeId(u64),
    "node:"
);
newtype!(
    /// A version number: the volume epoch (bumped each time a writer takes over; storage refuses
    /// any lower one) or a PG's membership epoch (bumped at each change of its segment set).
    Epoch(u64),
    "epoch:"
);
newtype!(
    /// One database's pages.
    VolumeId(u64),
    "volume:"
);

impl Lsn {
    pub const ZERO: Lsn = Lsn(0);
    pub const MAX: Lsn = Lsn(u64::MAX);

    pub const fn next(self) -> Lsn {
        Lsn(self.0 + 1)
    }
}

impl Epoch {
    pub const ZERO: Epoch = Epoch(0);

    /// The epoch after this one. Panics on overflow: 2^64 takeovers cannot happen, so reaching
    /// it means the stored state is broken.
    pub fn next(self) -> Epoch {
        Epoch(self.0.checked_add(1).expect("epoch overflow"))
    }
}
