//! The revenue split of a payment and its reversal on refunds, in integer minor units.
//!
//! Fees are basis points of the amount, rounded down; the creator gets the remainder, so
//! the three parts always add up to the amount. A refund reverses each part in proportion
//! to what is left of it, again rounding the fees down, and never takes a part below zero.

use serde::Serialize;

use crate::money::Amount;

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
    #[error("refund of {requested} exceeds the {remaining} left to refund")]
    RefundTooLarge {
        requested: Amount,
        remaining: Amount,
    },
    #[error("a refund takes more of a part than is left of it")]
    Inconsistent,
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
    pub fn split(&self, amount: Amount) -> Split {
        let a = amount.get();
        let fee = |bps: u32| -> i64 {
            // i128: amount * 10000 cannot overflow, and the result is at most `amount`.
            (i128::from(a) * i128::from(bps) / i128::from(BPS)) as i64
        };
        let platform = fee(self.platform_bps);
        let organization = fee(self.organization_bps);
        // Fees add up to at most the amount (at most 10000 bps together), so every part
        // is between 0 and the amount.
        Split {
            platform: Amount::from_db(platform),
            organization: Amount::from_db(organization),
            creator: Amount::from_db(a - platform - organization),
        }
    }
}

/// Who gets what of an amount. The parts always add up to the amount.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct Split {
    pub platform: Amount,
    pub organization: Amount,
    pub creator: Amount,
}

impl Split {
    /// The sum of the parts (never overflows: each part is at most an `i64` amount that
    /// was split, so their sum is that amount).
    pub fn total(&self) -> Amount {
        Amount::from_db(self.platform.get() + self.organization.get() + self.creator.get())
    }

    /// What a refund of `amount` takes back from each part of `self` (the split less
    /// what earlier refunds took): proportional, fees rounded down, nothing below zero.
    pub fn reverse(&self, amount: Amount) -> Result<Split, FeeError> {
        let remaining = self.total();
        if amount > remaining {
            return Err(FeeError::RefundTooLarge {
                requested: amount,
                remaining,
            });
        }
        if amount == remaining {
            return Ok(*self);
        }
        let (amount, total) = (amount.get(), remaining.get());
        let share =
            |part: Amount| (i128::from(part.get()) * i128::from(amount) / i128::from(total)) as i64;
        let mut platform = share(self.platform);
        let mut organization = share(self.organization);
        let mut creator = amount - platform - organization;
        // Rounding the fees down can leave the creator's share above what the creator has
        // left; move the excess back onto the fees, which have room by construction.
        if creator > self.creator.get() {
            let mut excess = creator - self.creator.get();
            creator = self.creator.get();
            let p = excess.min(self.platform.get() - platform);
            platform += p;
            excess -= p;
            organization += excess;
        }
        Ok(Split {
            platform: Amount::new(platform).map_err(|_| FeeError::Inconsistent)?,
            organization: Amount::new(organization).map_err(|_| FeeError::Inconsistent)?,
            creator: Amount::new(creator).map_err(|_| FeeError::Inconsistent)?,
        })
    }

    /// The parts less another split (what is left after a refund); `None` if `other`
    /// takes more of a part than there is.
    pub fn minus(&self, other: &Split) -> Option<Split> {
        Some(Split {
            platform: self.platform.checked_sub(other.platform)?,
            organization: self.organization.checked_sub(other.organization)?,
            creator: self.creator.checked_sub(other.creator)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn amount(v: i64) -> Amount {
        Amount::new(v).unwrap()
    }

    #[test]
    fn the_remainder_of_rounding_goes_to_the_creator() {
        let fees = FeeSchedule::new(1000, 250).unwrap(); // 10% and 2.5%
        assert_eq!(
            fees.split(amount(999)),
            Split {
                platform: amount(99),
                organization: amount(24),
                creator: amount(876)
            }
        );
        assert_eq!(fees.split(Amount::ZERO), Split::default());
    }

    #[test]
    fn fees_over_100_percent_are_refused() {
        assert_eq!(FeeSchedule::new(6000, 5000), Err(FeeError::TooHigh));
        assert!(FeeSchedule::new(u32::MAX, 1).is_err());
        assert!(FeeSchedule::new(10_000, 0).is_ok());
    }

    #[test]
    fn a_refund_larger_than_what_is_left_is_refused() {
        let split = FeeSchedule::new(1000, 0).unwrap().split(amount(1000));
        assert!(matches!(
            split.reverse(amount(1001)),
            Err(FeeError::RefundTooLarge { .. })
        ));
    }

    proptest! {
        #[test]
        fn a_split_always_adds_up_and_no_part_is_negative(
            amount in 0i64..=i64::MAX / 2,
            platform in 0u32..=10_000,
            organization in 0u32..=10_000,
        ) {
            prop_assume!(platform + organization <= BPS);
            let split = FeeSchedule::new(platform, organization).unwrap().split(Amount::new(amount).unwrap());
            prop_assert_eq!(split.total().get(), amount);
        }

        #[test]
        fn refunds_in_any_pieces_reverse_exactly_the_split_and_never_go_negative(
            amount in 1i64..10_000_000,
            platform in 0u32..=10_000,
            organization in 0u32..=10_000,
            pieces in proptest::collection::vec(1i64..5_000_000, 1..8),
        ) {
            prop_assume!(platform + organization <= BPS);
            let split = FeeSchedule::new(platform, organization).unwrap().split(Amount::new(amount).unwrap());
            let mut left = split;
            for piece in pieces {
                let piece = Amount::new(piece).unwrap().min(left.total());
                if piece.is_zero() { break; }
                let taken = left.reverse(piece).unwrap();
                prop_assert_eq!(taken.total(), piece);
                // Amounts cannot be negative; `minus` fails if a part would go below zero.
                left = left.minus(&taken).unwrap();
            }
            // Refunding the rest always empties every part exactly.
            let rest = left.reverse(left.total()).unwrap();
            prop_assert_eq!(left.minus(&rest), Some(Split::default()));
        }
    }
}
