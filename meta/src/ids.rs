//! Newtypes for the numbers the cluster map talks in.
//!
//! They have the same representation and serde form (`#[serde(transparent)]`, same inner
//! integer) as the newtypes in `sixfold-log-service`, so the two can be unified into one shared
//! crate later without changing any stored snapshot or log entry. Meta does not depend on
//! log-service today because that would pull gRPC code into the Raft core.

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
    /// A storage node in the cluster map (not a Raft member of the meta group: those are
    /// [`crate::MetaNodeId`]).
    NodeId(u64),
    "node:"
);
newtype!(
    /// One database's pages.
    VolumeId(u64),
    "volume:"
);
newtype!(
    /// Protection group: a contiguous range of a volume's pages kept as six segments.
    PgId(u32),
    "pg:"
);
newtype!(
    /// A version number: the volume epoch (bumped at each writer takeover) or a PG's membership
    /// epoch (bumped at each change of its segment set).
    Epoch(u64),
    "epoch:"
);

impl Epoch {
    pub const ZERO: Epoch = Epoch(0);

    /// The epoch after this one. Panics on overflow: 2^64 takeovers cannot happen, so reaching
    /// it means the stored state is broken.
    pub fn next(self) -> Epoch {
        Epoch(self.0.checked_add(1).expect("epoch overflow"))
    }
}
