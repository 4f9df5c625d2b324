//! The targeting policy (SPEC §6 "Targeting"): which rollout selects a device.
//!
//! Pure: no I/O, no FTP/HTTP/SQL types. A device's target is the newest active rollout of its
//! model that selects it — by the explicit device list, or by `percent` through a stable hash
//! of (rollout, device), so that raising the percent only ever adds devices.

use sha2::{Digest, Sha256};

use crate::domain::{DeviceId, InvalidInput};

/// Percent is kept in basis points (0..=10000) so 0.5 % canaries are possible.
pub const FULL: u16 = 10_000;

/// Converts an API percent (0–100, up to two decimals) to basis points.
///
/// # Errors
/// Outside 0–100 or not a finite number.
pub fn percent_to_bp(p: f64) -> Result<u16, InvalidInput> {
    if !p.is_finite() || !(0.0..=100.0).contains(&p) {
        return Err(InvalidInput(format!(
            "percent must be between 0 and 100, got {p}"
        )));
    }
    // In range by the check above, so the cast cannot truncate.
    Ok((p * 100.0).round() as u16)
}

pub fn bp_to_percent(bp: u16) -> f64 {
    f64::from(bp) / 100.0
}

/// The stable bucket (0..10000) of a device within a rollout.
pub fn bucket(rollout_id: i64, device: &DeviceId) -> u16 {
    let mut h = Sha256::new();
    h.update(b"fwdist-rollout-v1\0");
    h.update(rollout_id.to_be_bytes());
    h.update(device.octets());
    let d = h.finalize();
    let n = u64::from_be_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]]);
    // n % 10000 < 10000, so it always fits.
    (n % u64::from(FULL)) as u16
}

/// The part of a rollout that decides whom it selects.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub id: i64,
    pub percent_bp: u16,
    /// True when the device is on the rollout's explicit list.
    pub listed: bool,
}

/// Does this rollout select this device? Listed devices always; the rest by percent bucket.
pub fn selects(rule: &Rule, device: &DeviceId) -> bool {
    rule.listed || bucket(rule.id, device) < rule.percent_bp
}

/// Picks the target among the *active* rollouts of the device's model, given newest first.
/// Returns the index of the chosen rule.
pub fn choose_target(device: &DeviceId, active_newest_first: &[Rule]) -> Option<usize> {
    active_newest_first.iter().position(|r| selects(r, device))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn dev(n: u32) -> DeviceId {
        let b = n.to_be_bytes();
        DeviceId::parse(&format!("aabb{}", hex::encode(b))).unwrap_or_else(|_| unreachable!())
    }

    #[test]
    fn percent_conversion() {
        assert_eq!(percent_to_bp(0.0), Ok(0));
        assert_eq!(percent_to_bp(12.5), Ok(1250));
        assert_eq!(percent_to_bp(100.0), Ok(FULL));
        assert!(percent_to_bp(100.01).is_err());
        assert!(percent_to_bp(-1.0).is_err());
        assert!(percent_to_bp(f64::NAN).is_err());
    }

    #[test]
    fn zero_selects_nobody_and_full_selects_everybody() {
        for n in 0..500 {
            assert!(!selects(
                &Rule {
                    id: 7,
                    percent_bp: 0,
                    listed: false
                },
                &dev(n)
            ));
            assert!(selects(
                &Rule {
                    id: 7,
                    percent_bp: FULL,
                    listed: false
                },
                &dev(n)
            ));
        }
    }

    #[test]
    fn percent_is_roughly_honoured() {
        let picked = (0..10_000).filter(|n| {
            selects(
                &Rule {
                    id: 3,
                    percent_bp: 1000,
                    listed: false,
                },
                &dev(*n),
            )
        });
        let c = picked.count();
        assert!((800..1200).contains(&c), "10% picked {c} of 10000");
    }

    #[test]
    fn newest_selecting_rollout_wins() {
        let d = dev(1);
        let rules = [
            Rule {
                id: 9,
                percent_bp: 0,
                listed: false,
            },
            Rule {
                id: 8,
                percent_bp: 0,
                listed: true,
            },
            Rule {
                id: 2,
                percent_bp: FULL,
                listed: false,
            },
        ];
        assert_eq!(choose_target(&d, &rules), Some(1));
        assert_eq!(choose_target(&d, &rules[..1]), None);
    }

    proptest! {
        #[test]
        fn raising_percent_only_adds_devices(id in any::<i64>(), n in any::<u32>(), a in 0u16..=FULL, b in 0u16..=FULL) {
            let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
            let d = dev(n);
            let at_lo = selects(&Rule { id, percent_bp: lo, listed: false }, &d);
            let at_hi = selects(&Rule { id, percent_bp: hi, listed: false }, &d);
            prop_assert!(!at_lo || at_hi);
        }

        #[test]
        fn bucket_is_stable_and_in_range(id in any::<i64>(), n in any::<u32>()) {
            let d = dev(n);
            prop_assert_eq!(bucket(id, &d), bucket(id, &d));
            prop_assert!(bucket(id, &d) < FULL);
        }
    }
}
