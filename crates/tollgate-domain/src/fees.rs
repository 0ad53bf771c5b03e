//! The revenue split of a payment and its reversal on refunds, in integer minor units.
//!
//! Fees are basis points of the amount, rounded down; the creator gets the remainder, so
//! the three parts always add up to the amount. A refund reverses each part in proportion
//! to what is left of it, again rounding the fees down, and never takes a part below zero.

use serde::Serialize;

/// Basis points in one whole.
pub const BPS: u32 = 10_000;

/// A tenant's fee schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct FeeSchedule {
    platform_bps: u32,
    organization_bps: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FeeError {
    #[error("fees must add up to at most 10000 basis points (100%)")]
    TooHigh,
    #[error("amounts must not be negative")]
    Negative,
    #[error("refund of {requested} exceeds the {remaining} left to refund")]
    RefundTooLarge { requested: i64, remaining: i64 },
}

impl FeeSchedule {
    pub fn new(platform_bps: u32, organization_bps: u32) -> Result<Self, FeeError> {
        match platform_bps.checked_add(organization_bps) {
            Some(total) if total <= BPS => Ok(Self {
                platform_bps,
                organization_bps,
            }),
            _ => Err(FeeError::TooHigh),
        }
    }

    pub fn platform_bps(&self) -> u32 {
        self.platform_bps
    }

    pub fn organization_bps(&self) -> u32 {
        self.organization_bps
    }

    /// Splits `amount` between platform, organization and creator.
    pub fn split(&self, amount: i64) -> Result<Split, FeeError> {
        if amount < 0 {
            return Err(FeeError::Negative);
        }
        let fee = |bps: u32| -> i64 {
            // i128: amount * 10000 cannot overflow, and the result is at most `amount`.
            (i128::from(amount) * i128::from(bps) / i128::from(BPS)) as i64
        };
        let platform = fee(self.platform_bps);
        let organization = fee(self.organization_bps);
        Ok(Split {
            platform,
            organization,
            creator: amount - platform - organization,
        })
    }
}

/// Who gets what of an amount. The parts always add up to the amount.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct Split {
    pub platform: i64,
    pub organization: i64,
    pub creator: i64,
}

impl Split {
    pub fn total(&self) -> i64 {
        self.platform + self.organization + self.creator
    }

    /// What a refund of `amount` takes back from each part of `remaining` (the split less
    /// what earlier refunds took): proportional, fees rounded down, nothing below zero.
    pub fn reverse(&self, amount: i64) -> Result<Split, FeeError> {
        let remaining = self.total();
        if amount < 0 {
            return Err(FeeError::Negative);
        }
        if amount > remaining {
            return Err(FeeError::RefundTooLarge {
                requested: amount,
                remaining,
            });
        }
        if amount == remaining {
            return Ok(*self);
        }
        let share =
            |part: i64| (i128::from(part) * i128::from(amount) / i128::from(remaining)) as i64;
        let mut platform = share(self.platform);
        let mut organization = share(self.organization);
        let mut creator = amount - platform - organization;
        // Rounding the fees down can leave the creator's share above what the creator has
        // left; move the excess back onto the fees, which have room by construction.
        if creator > self.creator {
            let mut excess = creator - self.creator;
            creator = self.creator;
            let p = excess.min(self.platform - platform);
            platform += p;
            excess -= p;
            organization += excess;
        }
        Ok(Split {
            platform,
            organization,
            creator,
        })
    }

    /// The parts less another split (what is left after a refund).
    pub fn minus(&self, other: &Split) -> Split {
        Split {
            platform: self.platform - other.platform,
            organization: self.organization - other.organization,
            creator: self.creator - other.creator,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_remainder_of_rounding_goes_to_the_creator() {
        let fees = FeeSchedule::new(1000, 250).unwrap(); // 10% and 2.5%
        assert_eq!(
            fees.split(999).unwrap(),
            Split {
                platform: 99,
                organization: 24,
                creator: 876
            }
        );
        assert_eq!(fees.split(0).unwrap(), Split::default());
    }

    #[test]
    fn fees_over_100_percent_are_refused() {
        assert_eq!(FeeSchedule::new(6000, 5000), Err(FeeError::TooHigh));
        assert!(FeeSchedule::new(u32::MAX, 1).is_err());
        assert!(FeeSchedule::new(10_000, 0).is_ok());
    }

    #[test]
    fn a_refund_larger_than_what_is_left_is_refused() {
        let split = FeeSchedule::new(1000, 0).unwrap().split(1000).unwrap();
        assert!(matches!(
            split.reverse(1001),
            Err(FeeError::RefundTooLarge { .. })
        ));
        assert!(split.reverse(-1).is_err());
    }

    proptest! {
        #[test]
        fn a_split_always_adds_up_and_no_part_is_negative(
            amount in 0i64..=i64::MAX / 2,
            platform in 0u32..=10_000,
            organization in 0u32..=10_000,
        ) {
            prop_assume!(platform + organization <= BPS);
            let split = FeeSchedule::new(platform, organization).unwrap().split(amount).unwrap();
            prop_assert_eq!(split.total(), amount);
            prop_assert!(split.platform >= 0 && split.organization >= 0 && split.creator >= 0);
        }

        #[test]
        fn refunds_in_any_pieces_reverse_exactly_the_split_and_never_go_negative(
            amount in 1i64..10_000_000,
            platform in 0u32..=10_000,
            organization in 0u32..=10_000,
            pieces in proptest::collection::vec(1i64..5_000_000, 1..8),
        ) {
            prop_assume!(platform + organization <= BPS);
            let split = FeeSchedule::new(platform, organization).unwrap().split(amount).unwrap();
            let mut left = split;
            for piece in pieces {
                let piece = piece.min(left.total());
                if piece == 0 { break; }
                let taken = left.reverse(piece).unwrap();
                prop_assert_eq!(taken.total(), piece);
                prop_assert!(taken.platform >= 0 && taken.organization >= 0 && taken.creator >= 0);
                left = left.minus(&taken);
                prop_assert!(left.platform >= 0 && left.organization >= 0 && left.creator >= 0);
            }
            // Refunding the rest always empties every part exactly.
            let rest = left.reverse(left.total()).unwrap();
            prop_assert_eq!(left.minus(&rest), Split::default());
        }
    }
}
