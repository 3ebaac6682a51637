//! Segment placement: which six storage nodes hold a protection group's segments.
//!
//! A plain, deterministic function of its inputs (every meta replica computes the same answer
//! while applying the same command): two segments in each of three availability zones, so a
//! whole AZ plus one more node can be lost with 3 of 6 copies left (reads still work) and any
//! single AZ lost leaves 4 of 6 (writes still work).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::ids::NodeId;
use crate::limits::{AZS_PER_PG, SEGMENTS_PER_AZ, SEGMENTS_PER_PG};

/// A node that may receive segments, with its availability zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate<'a> {
    pub id: NodeId,
    pub az: &'a str,
}

/// Why a volume cannot be placed. The cluster map is left unchanged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum PlacementError {
    #[error(
        "placement needs at least {needed} usable (Ready or Running) nodes, the cluster has {usable}"
    )]
    TooFewNodes { usable: usize, needed: usize },
    #[error(
        "placement needs {needed} availability zones with at least {per_az} usable nodes each, \
         the cluster has {zones}"
    )]
    TooFewZones {
        zones: usize,
        needed: usize,
        per_az: usize,
    },
}

/// Places `pg_count` protection groups on `candidates`.
///
/// `load` is the number of segments each node already holds; every PG goes to the least loaded
/// nodes (ties broken by node id) of the three least loaded eligible zones (ties broken by
/// zone name), so segments spread evenly as PGs are added. Each result lists its segments by
/// zone name, then node id.
pub fn place_pgs(
    candidates: &[Candidate<'_>],
    load: &BTreeMap<NodeId, u64>,
    pg_count: u32,
) -> Result<Vec<[NodeId; SEGMENTS_PER_PG]>, PlacementError> {
    let mut zones: BTreeMap<&str, Vec<NodeId>> = BTreeMap::new();
    for c in candidates {
        zones.entry(c.az).or_default().push(c.id);
    }
    let usable: usize = zones.values().map(Vec::len).sum();
    if usable < SEGMENTS_PER_PG {
        return Err(PlacementError::TooFewNodes {
            usable,
            needed: SEGMENTS_PER_PG,
        });
    }
    zones.retain(|_, nodes| nodes.len() >= SEGMENTS_PER_AZ);
    if zones.len() < AZS_PER_PG {
        return Err(PlacementError::TooFewZones {
            zones: zones.len(),
            needed: AZS_PER_PG,
            per_az: SEGMENTS_PER_AZ,
        });
    }

    let mut load = load.clone();
    let load_of = |load: &BTreeMap<NodeId, u64>, id: NodeId| load.get(&id).copied().unwrap_or(0);
    let mut placed = Vec::with_capacity(pg_count as usize);
    for _ in 0..pg_count {
        // Each zone offers its SEGMENTS_PER_AZ least loaded nodes; the zones whose offers are
        // lightest win.
        let mut offers: Vec<(u64, &str, Vec<NodeId>)> = zones
            .iter()
            .map(|(&az, nodes)| {
                let mut nodes = nodes.clone();
                nodes.sort_by_key(|&id| (load_of(&load, id), id));
                nodes.truncate(SEGMENTS_PER_AZ);
                let weight = nodes.iter().map(|&id| load_of(&load, id)).sum();
                (weight, az, nodes)
            })
            .collect();
        offers.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
        offers.truncate(AZS_PER_PG);
        offers.sort_by(|a, b| a.1.cmp(b.1));

        let mut segments = Vec::with_capacity(SEGMENTS_PER_PG);
        for (_, _, mut nodes) in offers {
            nodes.sort();
            segments.extend(nodes);
        }
        for &id in &segments {
            *load.entry(id).or_insert(0) += 1;
        }
        let segments: [NodeId; SEGMENTS_PER_PG] = segments
            .try_into()
            .expect("three zones of two nodes make six segments");
        placed.push(segments);
    }
    Ok(placed)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    fn nodes(spec: &[(u64, &'static str)]) -> Vec<Candidate<'static>> {
        spec.iter()
            .map(|&(id, az)| Candidate { id: NodeId(id), az })
            .collect()
    }

    fn azs_of(segments: &[NodeId], all: &[Candidate<'_>]) -> BTreeMap<String, usize> {
        let mut count = BTreeMap::new();
        for s in segments {
            let az = all.iter().find(|c| c.id == *s).unwrap().az;
            *count.entry(az.to_string()).or_insert(0) += 1;
        }
        count
    }

    // Proves the minimal cluster (2 nodes in each of 3 AZs) places every PG on all six nodes,
    // two per zone, in a fixed order.
    #[test]
    fn six_nodes_three_azs() {
        let all = nodes(&[(1, "a"), (2, "a"), (3, "b"), (4, "b"), (5, "c"), (6, "c")]);
        let placed = place_pgs(&all, &BTreeMap::new(), 3).unwrap();
        assert_eq!(placed.len(), 3);
        for pg in &placed {
            assert_eq!(pg.map(|n| n.0), [1, 2, 3, 4, 5, 6]);
        }
    }

    // Proves that with more nodes and zones than needed, every PG still gets six distinct
    // nodes two per zone, and segments spread evenly (no node holds more than one above any
    // other).
    #[test]
    fn spreads_evenly_over_a_larger_cluster() {
        let mut spec = Vec::new();
        for (i, az) in ["a", "b", "c", "d"].iter().enumerate() {
            for j in 0..3u64 {
                spec.push((i as u64 * 10 + j, *az));
            }
        }
        let all = nodes(&spec);
        let placed = place_pgs(&all, &BTreeMap::new(), 40).unwrap();
        let mut load: BTreeMap<NodeId, u64> = BTreeMap::new();
        for pg in &placed {
            let distinct: BTreeSet<_> = pg.iter().collect();
            assert_eq!(distinct.len(), SEGMENTS_PER_PG);
            let zones = azs_of(pg, &all);
            assert_eq!(zones.len(), AZS_PER_PG);
            assert!(zones.values().all(|&n| n == SEGMENTS_PER_AZ));
            for &n in pg {
                *load.entry(n).or_insert(0) += 1;
            }
        }
        let max = load.values().max().unwrap();
        let min = load.values().min().unwrap();
        assert_eq!(load.len(), all.len(), "every node is used");
        assert!(max - min <= 1, "load {load:?}");
    }

    // Proves placement is a pure function: same inputs, same answer, whatever the order the
    // candidates come in.
    #[test]
    fn deterministic_regardless_of_input_order() {
        let spec = [
            (5, "c"),
            (1, "a"),
            (4, "b"),
            (2, "a"),
            (3, "b"),
            (6, "c"),
            (7, "a"),
        ];
        let mut reversed = spec;
        reversed.reverse();
        let load = BTreeMap::from([(NodeId(1), 3)]);
        assert_eq!(
            place_pgs(&nodes(&spec), &load, 5).unwrap(),
            place_pgs(&nodes(&reversed), &load, 5).unwrap()
        );
        // Existing load steers new segments away from node 1.
        let first = place_pgs(&nodes(&spec), &load, 1).unwrap()[0];
        assert!(!first.contains(&NodeId(1)));
    }

    // Proves the two refusals: fewer than six usable nodes, and six or more nodes that do not
    // make three zones of two.
    #[test]
    fn refuses_too_few_nodes_or_zones() {
        let five = nodes(&[(1, "a"), (2, "a"), (3, "b"), (4, "b"), (5, "c")]);
        assert_eq!(
            place_pgs(&five, &BTreeMap::new(), 1),
            Err(PlacementError::TooFewNodes {
                usable: 5,
                needed: 6
            })
        );
        let lopsided = nodes(&[(1, "a"), (2, "a"), (3, "a"), (4, "b"), (5, "b"), (6, "c")]);
        assert_eq!(
            place_pgs(&lopsided, &BTreeMap::new(), 1),
            Err(PlacementError::TooFewZones {
                zones: 2,
                needed: 3,
                per_az: 2
            })
        );
    }
}
