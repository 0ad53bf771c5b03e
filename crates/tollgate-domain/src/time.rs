//! Time in one unit: Unix seconds, as Stripe's API has it, in requests, answers, rows and
//! code alike. A `Timestamp` is not an `i64`, so a count of milliseconds cannot be passed
//! where a moment is meant.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A moment, in whole seconds since the Unix epoch.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(transparent)]
pub struct Timestamp(i64);

impl Timestamp {
    /// The earliest moment Tollgate takes from a request (2000-01-01).
    pub const MIN_ACCEPTED: Timestamp = Timestamp(946_684_800);
    /// The latest moment Tollgate takes from a request (9999-12-31).
    pub const MAX_ACCEPTED: Timestamp = Timestamp(253_402_214_400);

    /// Now, by the system clock.
    pub fn now() -> Self {
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        Self(secs)
    }

    pub const fn from_secs(secs: i64) -> Self {
        Self(secs)
    }

    pub const fn secs(self) -> i64 {
        self.0
    }

    /// This moment plus `d` (whole seconds, saturating).
    pub fn plus(self, d: Duration) -> Self {
        let secs = i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
        Self(self.0.saturating_add(secs))
    }

    /// This moment less `d` (whole seconds, saturating).
    pub fn minus(self, d: Duration) -> Self {
        let secs = i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
        Self(self.0.saturating_sub(secs))
    }

    /// This moment plus `days` days (saturating).
    pub fn plus_days(self, days: i64) -> Self {
        Self(self.0.saturating_add(days.saturating_mul(86_400)))
    }

    /// Whether a time sent in a request is within what Tollgate takes (2000 to 9999).
    pub fn is_plausible(self) -> bool {
        (Self::MIN_ACCEPTED..=Self::MAX_ACCEPTED).contains(&self)
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl utoipa::PartialSchema for Timestamp {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, SchemaFormat, Type};
        ObjectBuilder::new()
            .schema_type(Type::Integer)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
            .description(Some("A moment in Unix seconds."))
            .examples([serde_json::json!(1_767_225_600)])
            .build()
            .into()
    }
}

impl utoipa::ToSchema for Timestamp {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moments_move_by_whole_seconds_and_saturate() {
        let t = Timestamp::from_secs(1_000);
        assert_eq!(t.plus(Duration::from_millis(2_500)).secs(), 1_002);
        assert_eq!(t.plus_days(1).secs(), 87_400);
        assert_eq!(Timestamp::from_secs(i64::MAX).plus_days(1).secs(), i64::MAX);
        assert!(Timestamp::now().is_plausible());
        assert!(!Timestamp::from_secs(i64::MIN).is_plausible());
    }
}
