//! Where each protection group's six segments live.
//!
//! Until the meta service owns placement, it is read from a JSON file shared by the storage nodes
//! and the writer. Everything else reads placement only through [`Placement`], so the source can
//! change without touching the log path.

use std::collections::HashSet;
use std::ops::Range;
use std::path::Path;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::limits::{SEGMENTS_PER_PG, VOLUME_PGS_MAX};
use crate::types::{NodeId, PageId, PgId};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    pub id: NodeId,
    /// `host:port` of the node's gRPC server.
    pub addr: String,
    /// Availability-zone label.
    pub az: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PgPlacement {
    pub id: PgId,
    pub segments: [NodeId; SEGMENTS_PER_PG],
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placement {
    pub nodes: Vec<NodeInfo>,
    /// Pages per protection group: PG `i` owns pages `[i * pages_per_pg, (i + 1) * pages_per_pg)`.
    pub pages_per_pg: u64,
    pub pgs: Vec<PgPlacement>,
}

#[derive(Debug, Error)]
pub enum PlacementError {
    #[error("cannot read placement file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("placement file {path} is not valid JSON: {source}")]
    Parse {
        path: String,
        source: serde_json::Error,
    },
    #[error("invalid placement: {0}")]
    Invalid(String),
}

impl Placement {
    pub fn load(path: &Path) -> Result<Placement, PlacementError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| PlacementError::Read {
            path: shown.clone(),
            source,
        })?;
        let placement: Placement =
            serde_json::from_str(&text).map_err(|source| PlacementError::Parse {
                path: shown,
                source,
            })?;
        placement.validate()?;
        Ok(placement)
    }

    /// A placement of `pg_count` PGs, each on all of `nodes` (which must be exactly six).
    pub fn uniform(nodes: Vec<NodeInfo>, pages_per_pg: u64, pg_count: u32) -> Placement {
        let ids: Vec<NodeId> = nodes.iter().map(|n| n.id).collect();
        let segments: [NodeId; SEGMENTS_PER_PG] = ids
            .try_into()
            .expect("uniform placement needs exactly six nodes");
        let pgs = (0..pg_count)
            .map(|i| PgPlacement {
                id: PgId(i),
                segments,
            })
            .collect();
        Placement {
            nodes,
            pages_per_pg,
            pgs,
        }
    }

    pub fn validate(&self) -> Result<(), PlacementError> {
        let invalid = |m: String| Err(PlacementError::Invalid(m));
        if self.pages_per_pg == 0 {
            return invalid("pages_per_pg must be positive".into());
        }
        if self.pgs.is_empty() || self.pgs.len() > VOLUME_PGS_MAX {
            return invalid(format!(
                "a volume needs 1..={VOLUME_PGS_MAX} PGs, got {}",
                self.pgs.len()
            ));
        }
        let mut ids = HashSet::new();
        for node in &self.nodes {
            if !ids.insert(node.id) {
                return invalid(format!("node {} listed twice", node.id));
            }
        }
        for (i, pg) in self.pgs.iter().enumerate() {
            if pg.id != PgId(i as u32) {
                return invalid(format!("PG at position {i} has id {}", pg.id));
            }
            let distinct: HashSet<_> = pg.segments.iter().collect();
            if distinct.len() != SEGMENTS_PER_PG {
                return invalid(format!("PG {} must have six distinct segment nodes", pg.id));
            }
            if let Some(missing) = pg.segments.iter().find(|n| !ids.contains(n)) {
                return invalid(format!("PG {} names unknown node {missing}", pg.id));
            }
        }
        Ok(())
    }

    pub fn node(&self, id: NodeId) -> Option<&NodeInfo> {
        self.nodes.iter().find(|n| n.id == id)
    }

    pub fn pg(&self, id: PgId) -> Option<&PgPlacement> {
        self.pgs.get(id.get() as usize)
    }

    /// The PG that owns `page`, or None when the page lies beyond the volume.
    pub fn pg_of(&self, page: PageId) -> Option<PgId> {
        let index = page.get() / self.pages_per_pg;
        (index < self.pgs.len() as u64).then_some(PgId(index as u32))
    }

    pub fn pages_of(&self, pg: PgId) -> Range<u64> {
        let start = pg.get() as u64 * self.pages_per_pg;
        start..start + self.pages_per_pg
    }

    /// The PGs that have a segment on `node`.
    pub fn pgs_on(&self, node: NodeId) -> impl Iterator<Item = &PgPlacement> {
        self.pgs
            .iter()
            .filter(move |pg| pg.segments.contains(&node))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn six() -> Vec<NodeInfo> {
        (1..=6)
            .map(|i| NodeInfo {
                id: NodeId(i),
                addr: format!("127.0.0.1:{}", 7000 + i),
                az: format!("az{}", i.div_ceil(2)),
            })
            .collect()
    }

    #[test]
    fn pages_route_to_their_pg() {
        let p = Placement::uniform(six(), 100, 3);
        p.validate().unwrap();
        assert_eq!(p.pg_of(PageId(0)), Some(PgId(0)));
        assert_eq!(p.pg_of(PageId(199)), Some(PgId(1)));
        assert_eq!(p.pg_of(PageId(300)), None);
        assert_eq!(p.pages_of(PgId(2)), 200..300);
    }

    #[test]
    fn duplicate_segment_nodes_are_refused() {
        let mut p = Placement::uniform(six(), 100, 1);
        p.pgs[0].segments[5] = NodeId(1);
        assert!(p.validate().is_err());
    }
}
