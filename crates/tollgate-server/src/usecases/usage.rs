//! Metered usage: recorded once per `Idempotency-Key`, then reported to Stripe's billing
//! meters by the usage reporter.

use serde::Deserialize;
use tollgate_domain::{CustomerId, Timestamp};
use tollgate_store::{NewUsage, StoreError, Tenant, UsageRecord};
use utoipa::ToSchema;

use crate::error::{Code, Error, Result};
use crate::state::AppState;

/// Usage as the API takes it.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UsageInput {
    #[schema(value_type = CustomerId)]
    pub customer: String,
    /// The usage event name of a metered price.
    pub event_name: String,
    /// How much was used (0 or more).
    pub value: i64,
    /// When it happened; now by default. Stripe takes usage up to 35 days old and at most
    /// 5 minutes ahead.
    pub occurred_at: Option<Timestamp>,
}

/// How far back usage may be dated (Stripe takes meter events up to 35 days old).
const MAX_AGE_DAYS: i64 = 35;
/// How far ahead (Stripe takes them up to 5 minutes in the future).
const MAX_AHEAD: std::time::Duration = std::time::Duration::from_secs(300);

/// Records usage once per idempotency key; the reporter sends it to Stripe. Answers the
/// record and whether it is new.
pub async fn record_usage(
    state: &AppState,
    tenant: &Tenant,
    u: UsageInput,
    idempotency_key: Option<&str>,
) -> Result<(UsageRecord, bool)> {
    let t = &tenant.id;
    let key = idempotency_key.ok_or_else(|| {
        Error::invalid(
            "Idempotency-Key",
            Code::IdempotencyKeyRequired,
            "Usage is counted once per Idempotency-Key: send one with every report.",
        )
    })?;
    let customer = CustomerId::parse(&u.customer).map_err(|e| Error::bad_id("customer", e))?;
    if !state.customer_exists(t, &customer).await? {
        return Err(Error::not_found("customer", &u.customer).with_param("customer"));
    }
    let meter = match state.store.meter_by_event(t, &u.event_name).await {
        Ok(m) => m,
        Err(StoreError::NotFound) => {
            return Err(
                Error::not_found("metered price for event", &u.event_name).with_param("event_name")
            );
        }
        Err(e) => return Err(e.into()),
    };
    if u.value < 0 {
        return Err(Error::param("value", "value must not be negative."));
    }
    let now = Timestamp::now();
    let at = u.occurred_at.unwrap_or(now);
    if at < now.plus_days(-MAX_AGE_DAYS) || at > now.plus(MAX_AHEAD) {
        return Err(Error::invalid(
            "occurred_at",
            Code::InvalidTime,
            "occurred_at must be within the past 35 days and at most 5 minutes ahead.",
        ));
    }
    let recorded = state
        .store
        .record_usage(
            t,
            &NewUsage {
                customer_id: customer,
                meter_id: meter.id,
                value: u.value,
                occurred_at: at,
                idempotency_key: key.to_owned(),
            },
        )
        .await?;
    if recorded.1 {
        state.usage_signal.notify_one();
    }
    Ok(recorded)
}
