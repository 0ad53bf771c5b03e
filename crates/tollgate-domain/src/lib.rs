//! Tollgate's domain: typed ids, money in minor units, the revenue split and its reversal
//! on refunds, the statuses Tollgate keeps, and the access rules of subscriptions. Pure:
//! no I/O, no Stripe types.

pub mod fees;
pub mod ids;
pub mod money;
pub mod status;
pub mod subscription;

pub use fees::{FeeSchedule, Split};
pub use ids::*;
pub use money::{Currency, Email};
