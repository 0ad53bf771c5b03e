//! What a subscription grants, and when: the rules `GET /v1/access` applies to subscriptions,
//! and whether a change of plan is an upgrade (now, prorated) or a downgrade (at period
//! end). Times here are Stripe's: Unix seconds, on the subscription's clock.

use crate::status::{RecurringInterval, SubscriptionStatus};
use crate::time::Timestamp;

/// What the access rules need to know of a subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Standing {
    pub status: SubscriptionStatus,
    pub current_period_end: Timestamp,
    pub cancel_at_period_end: bool,
    /// A cancellation set for a moment (Stripe's `cancel_at`).
    pub cancel_at: Option<Timestamp>,
    /// Collection paused (`pause_collection` set).
    pub collection_paused: bool,
    /// When the failed payment that made it past due was attempted.
    pub past_due_since: Option<Timestamp>,
}

/// What a subscription grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grant {
    /// Nothing.
    None,
    /// Access that ends at this moment, or never on its own (`None`).
    Until(Option<Timestamp>),
}

impl Standing {
    /// The access rules:
    /// - active and trialing grant access, until the period ends when canceled at period
    ///   end (or until `cancel_at`);
    /// - past_due keeps access for the tenant's grace period from the failed payment;
    /// - paused (the status, or collection paused) grants nothing, nor do canceled, unpaid,
    ///   incomplete and incomplete_expired.
    pub fn grant(&self, grace_days: i64) -> Grant {
        use SubscriptionStatus as S;
        if self.collection_paused {
            return Grant::None;
        }
        let scheduled_end = match (self.cancel_at_period_end, self.cancel_at) {
            (true, Some(at)) => Some(at.min(self.current_period_end)),
            (true, None) => Some(self.current_period_end),
            (false, at) => at,
        };
        match self.status {
            S::Active | S::Trialing => Grant::Until(scheduled_end),
            S::PastDue => {
                let grace_end = match self.past_due_since {
                    Some(_) if grace_days <= 0 => return Grant::None,
                    Some(since) => since.plus_days(grace_days),
                    // Past due with no failed attempt on record: hold the period's access
                    // and let the next sync of the subscription decide.
                    None => self.current_period_end,
                };
                Grant::Until(Some(scheduled_end.map_or(grace_end, |e| e.min(grace_end))))
            }
            S::Paused | S::Canceled | S::Unpaid | S::Incomplete | S::IncompleteExpired => {
                Grant::None
            }
        }
    }
}

/// A recurring price as plan changes compare them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub unit_amount: i64,
    pub quantity: i64,
    pub interval: RecurringInterval,
    pub interval_count: i64,
}

impl Rate {
    /// What a year of this costs, in minor units times 10,080 (days, weeks, months and
    /// years all divide it evenly enough to compare in integers).
    fn per_year_scaled(&self) -> i128 {
        // Periods per year, times 10,080 to stay in integers: 365 days, 52 weeks, 12 months.
        let per_year_scaled: i128 = match self.interval {
            RecurringInterval::Day => 365 * 10_080,
            RecurringInterval::Week => 52 * 10_080,
            RecurringInterval::Month => 12 * 10_080,
            RecurringInterval::Year => 10_080,
        };
        let count = i128::from(self.interval_count.max(1));
        i128::from(self.unit_amount) * i128::from(self.quantity.max(0)) * per_year_scaled / count
    }
}

/// Which way a change of plan goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    /// Costs more a year: takes effect now, the difference prorated and charged at once.
    Upgrade,
    /// Costs less a year: the customer keeps what they paid for until the period ends.
    Downgrade,
}

/// Compares two prices by what a year of each costs; the same cost counts as an upgrade
/// (it takes effect now and prorates to nothing).
pub fn change(from: Rate, to: Rate) -> Change {
    if to.per_year_scaled() < from.per_year_scaled() {
        Change::Downgrade
    } else {
        Change::Upgrade
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use SubscriptionStatus as S;
    use proptest::prelude::*;

    const DAY: i64 = 86_400;

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_secs(secs)
    }

    fn standing(status: SubscriptionStatus) -> Standing {
        Standing {
            status,
            current_period_end: at(1_000_000),
            cancel_at_period_end: false,
            cancel_at: None,
            collection_paused: false,
            past_due_since: None,
        }
    }

    #[test]
    fn active_and_trialing_grant_without_end_and_canceling_ones_until_the_period_ends() {
        assert_eq!(standing(S::Active).grant(3), Grant::Until(None));
        assert_eq!(standing(S::Trialing).grant(3), Grant::Until(None));
        let canceling = Standing {
            cancel_at_period_end: true,
            ..standing(S::Active)
        };
        assert_eq!(canceling.grant(3), Grant::Until(Some(at(1_000_000))));
        let scheduled = Standing {
            cancel_at: Some(at(900_000)),
            ..standing(S::Active)
        };
        assert_eq!(scheduled.grant(3), Grant::Until(Some(at(900_000))));
    }

    #[test]
    fn past_due_keeps_access_for_the_grace_period_only() {
        let late = Standing {
            past_due_since: Some(at(500_000)),
            ..standing(S::PastDue)
        };
        assert_eq!(late.grant(3), Grant::Until(Some(at(500_000 + 3 * DAY))));
        assert_eq!(late.grant(0), Grant::None, "no grace: no access");
    }

    #[test]
    fn paused_canceled_unpaid_and_incomplete_grant_nothing() {
        for s in [
            S::Paused,
            S::Canceled,
            S::Unpaid,
            S::Incomplete,
            S::IncompleteExpired,
        ] {
            assert_eq!(standing(s).grant(3), Grant::None, "{s}");
        }
        let paused = Standing {
            collection_paused: true,
            ..standing(S::Active)
        };
        assert_eq!(paused.grant(3), Grant::None);
    }

    #[test]
    fn a_cheaper_year_is_a_downgrade_and_a_dearer_one_an_upgrade() {
        let monthly = |amount| Rate {
            unit_amount: amount,
            quantity: 1,
            interval: RecurringInterval::Month,
            interval_count: 1,
        };
        let yearly = |amount| Rate {
            unit_amount: amount,
            quantity: 1,
            interval: RecurringInterval::Year,
            interval_count: 1,
        };
        assert_eq!(change(monthly(1000), monthly(2000)), Change::Upgrade);
        assert_eq!(change(monthly(2000), monthly(1000)), Change::Downgrade);
        // 29.00 a month is 348.00 a year: 290.00 a year costs less.
        assert_eq!(change(monthly(2900), yearly(29_000)), Change::Downgrade);
        assert_eq!(change(yearly(29_000), monthly(2900)), Change::Upgrade);
        // Two seats of a cheaper plan can cost more than one of a dearer one.
        let seats = Rate {
            quantity: 3,
            ..monthly(1000)
        };
        assert_eq!(change(monthly(2000), seats), Change::Upgrade);
    }

    proptest! {
        #[test]
        fn access_never_outlasts_a_scheduled_end_or_the_grace_period(
            status in proptest::sample::select(SubscriptionStatus::ALL.to_vec()),
            period_end in 0i64..2_000_000_000,
            cancel_at_period_end: bool,
            cancel_at in proptest::option::of(0i64..2_000_000_000),
            paused: bool,
            since in proptest::option::of(0i64..2_000_000_000),
            grace in 0i64..60,
        ) {
            let s = Standing {
                status,
                current_period_end: at(period_end),
                cancel_at_period_end,
                cancel_at: cancel_at.map(at),
                collection_paused: paused,
                past_due_since: since.map(at),
            };
            match s.grant(grace) {
                Grant::None => {}
                Grant::Until(end) => {
                    prop_assert!(!paused);
                    prop_assert!(matches!(status, S::Active | S::Trialing | S::PastDue));
                    if cancel_at_period_end {
                        prop_assert!(end.is_some_and(|e| e.secs() <= period_end));
                    }
                    if let Some(c) = cancel_at {
                        prop_assert!(end.is_some_and(|e| e.secs() <= c));
                    }
                    if let (S::PastDue, Some(since)) = (status, since) {
                        prop_assert!(end.is_some_and(|e| e.secs() <= since + grace * DAY));
                    }
                }
            }
        }

        #[test]
        fn a_change_and_its_reverse_go_opposite_ways_unless_the_cost_is_equal(
            a in 1i64..1_000_000, b in 1i64..1_000_000,
            qa in 1i64..50, qb in 1i64..50,
            ia in proptest::sample::select(RecurringInterval::ALL.to_vec()),
            ib in proptest::sample::select(RecurringInterval::ALL.to_vec()),
        ) {
            let x = Rate { unit_amount: a, quantity: qa, interval: ia, interval_count: 1 };
            let y = Rate { unit_amount: b, quantity: qb, interval: ib, interval_count: 1 };
            if x.per_year_scaled() != y.per_year_scaled() {
                prop_assert_ne!(change(x, y), change(y, x));
            } else {
                prop_assert_eq!(change(x, y), Change::Upgrade);
            }
        }
    }
}
