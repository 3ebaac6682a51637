//! The writer lease: which compute node may write, and the volume epoch that fences every
//! other.
//!
//! Plain functions of (current lease, command, time supplied in the command), so applying them
//! is deterministic. The lease only decides who *should* write; what stops an old writer is the
//! epoch, which storage checks on every write and which never repeats: every grant takes the
//! highest epoch ever granted plus one, even for the same holder (a restarted writer must fence
//! its previous incarnation).

use serde::{Deserialize, Serialize};

use crate::ids::Epoch;
use crate::limits::{HOLDER_BYTES_MAX, LEASE_MS_MAX};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriterLease {
    pub holder: String,
    /// The volume epoch this writer stamps on every write.
    pub epoch: Epoch,
    /// The lease is valid while `now_ms < expiry_ms` (ms since the Unix epoch).
    pub expiry_ms: u64,
}

impl WriterLease {
    pub fn is_expired_at(&self, now_ms: u64) -> bool {
        now_ms >= self.expiry_ms
    }
}

/// Why a lease command was refused. The cluster map is left unchanged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum LeaseError {
    #[error("the writer lease is held by {holder:?} (epoch {epoch}) until {expiry_ms} ms")]
    Held {
        holder: String,
        epoch: Epoch,
        expiry_ms: u64,
    },
    #[error("no writer lease is held")]
    NotHeld,
    #[error("the writer lease is held by {holder:?} with epoch {epoch}, not by the caller")]
    NotHolder { holder: String, epoch: Epoch },
    #[error("the writer lease expired at {expiry_ms} ms; acquire a new one (with a new epoch)")]
    Expired { expiry_ms: u64 },
    #[error("lease_ms {lease_ms} is not in 1..={max}")]
    InvalidDuration { lease_ms: u64, max: u64 },
    #[error("lease holder name must be 1..={max} bytes")]
    InvalidHolder { max: usize },
}

fn check_args(holder: &str, lease_ms: u64) -> Result<(), LeaseError> {
    if holder.is_empty() || holder.len() > HOLDER_BYTES_MAX {
        return Err(LeaseError::InvalidHolder {
            max: HOLDER_BYTES_MAX,
        });
    }
    if lease_ms == 0 || lease_ms > LEASE_MS_MAX {
        return Err(LeaseError::InvalidDuration {
            lease_ms,
            max: LEASE_MS_MAX,
        });
    }
    Ok(())
}

/// Grants the lease to `holder` with epoch `epoch_max + 1` if there is no lease, it expired, or
/// `holder` already holds it; refuses with the current holder otherwise.
pub fn acquire(
    current: Option<&WriterLease>,
    epoch_max: Epoch,
    holder: &str,
    now_ms: u64,
    lease_ms: u64,
) -> Result<WriterLease, LeaseError> {
    check_args(holder, lease_ms)?;
    if let Some(lease) = current {
        assert!(
            lease.epoch <= epoch_max,
            "lease epoch above the highest granted"
        );
        if lease.holder != holder && !lease.is_expired_at(now_ms) {
            return Err(LeaseError::Held {
                holder: lease.holder.clone(),
                epoch: lease.epoch,
                expiry_ms: lease.expiry_ms,
            });
        }
    }
    Ok(WriterLease {
        holder: holder.to_string(),
        epoch: epoch_max.next(),
        expiry_ms: now_ms.saturating_add(lease_ms),
    })
}

/// Extends the lease of its current holder, identified by name and epoch. An expired lease is
/// not renewed: its holder must acquire again and go through recovery with a new epoch. The
/// expiry never moves backwards.
pub fn renew(
    current: Option<&WriterLease>,
    holder: &str,
    epoch: Epoch,
    now_ms: u64,
    lease_ms: u64,
) -> Result<WriterLease, LeaseError> {
    check_args(holder, lease_ms)?;
    let lease = current.ok_or(LeaseError::NotHeld)?;
    if lease.holder != holder || lease.epoch != epoch {
        return Err(LeaseError::NotHolder {
            holder: lease.holder.clone(),
            epoch: lease.epoch,
        });
    }
    if lease.is_expired_at(now_ms) {
        return Err(LeaseError::Expired {
            expiry_ms: lease.expiry_ms,
        });
    }
    Ok(WriterLease {
        holder: lease.holder.clone(),
        epoch: lease.epoch,
        expiry_ms: lease.expiry_ms.max(now_ms.saturating_add(lease_ms)),
    })
}

/// Checks that `holder` with `epoch` may give the lease up (expired or not). The epoch stays
/// used: the next grant gets a higher one.
pub fn release(
    current: Option<&WriterLease>,
    holder: &str,
    epoch: Epoch,
) -> Result<(), LeaseError> {
    let lease = current.ok_or(LeaseError::NotHeld)?;
    if lease.holder != holder || lease.epoch != epoch {
        return Err(LeaseError::NotHolder {
            holder: lease.holder.clone(),
            epoch: lease.epoch,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(holder: &str, epoch: u64, expiry_ms: u64) -> WriterLease {
        WriterLease {
            holder: holder.into(),
            epoch: Epoch(epoch),
            expiry_ms,
        }
    }

    // Proves the three grant cases (no lease, expired lease, same holder) each take a fresh
    // epoch above the highest ever granted, and that a live lease of another holder is refused
    // with who holds it until when.
    #[test]
    fn acquire_rules() {
        assert_eq!(
            acquire(None, Epoch(0), "w1", 1000, 500),
            Ok(lease("w1", 1, 1500))
        );
        // Released earlier: the epoch still moves past the highest granted.
        assert_eq!(
            acquire(None, Epoch(7), "w1", 1000, 500),
            Ok(lease("w1", 8, 1500))
        );

        let held = lease("w1", 3, 1500);
        assert_eq!(
            acquire(Some(&held), Epoch(3), "w2", 1499, 500),
            Err(LeaseError::Held {
                holder: "w1".into(),
                epoch: Epoch(3),
                expiry_ms: 1500
            })
        );
        assert_eq!(
            acquire(Some(&held), Epoch(3), "w2", 1500, 500),
            Ok(lease("w2", 4, 2000))
        );
        assert_eq!(
            acquire(Some(&held), Epoch(3), "w1", 1200, 500),
            Ok(lease("w1", 4, 1700))
        );
    }

    // Proves renew only works for the holder with its epoch while the lease is live, and never
    // shortens it.
    #[test]
    fn renew_rules() {
        let held = lease("w1", 3, 1500);
        assert_eq!(
            renew(Some(&held), "w1", Epoch(3), 1200, 500),
            Ok(lease("w1", 3, 1700))
        );
        assert_eq!(
            renew(Some(&held), "w1", Epoch(3), 900, 100),
            Ok(lease("w1", 3, 1500))
        );
        assert_eq!(
            renew(Some(&held), "w1", Epoch(2), 1200, 500),
            Err(LeaseError::NotHolder {
                holder: "w1".into(),
                epoch: Epoch(3)
            })
        );
        assert!(matches!(
            renew(Some(&held), "w2", Epoch(3), 1200, 500),
            Err(LeaseError::NotHolder { .. })
        ));
        assert_eq!(
            renew(Some(&held), "w1", Epoch(3), 1500, 500),
            Err(LeaseError::Expired { expiry_ms: 1500 })
        );
        assert_eq!(
            renew(None, "w1", Epoch(3), 1200, 500),
            Err(LeaseError::NotHeld)
        );
    }

    // Proves release checks the holder and epoch, and that bad arguments are refused.
    #[test]
    fn release_and_argument_checks() {
        let held = lease("w1", 3, 1500);
        assert_eq!(release(Some(&held), "w1", Epoch(3)), Ok(()));
        assert!(release(Some(&held), "w1", Epoch(4)).is_err());
        assert_eq!(release(None, "w1", Epoch(3)), Err(LeaseError::NotHeld));
        assert!(matches!(
            acquire(None, Epoch(0), "", 0, 10),
            Err(LeaseError::InvalidHolder { .. })
        ));
        assert!(matches!(
            acquire(None, Epoch(0), "w", 0, 0),
            Err(LeaseError::InvalidDuration { .. })
        ));
        assert!(matches!(
            acquire(None, Epoch(0), "w", 0, LEASE_MS_MAX + 1),
            Err(LeaseError::InvalidDuration { .. })
        ));
    }
}
