//! `tollgate stripe setup`: makes the Stripe account send Tollgate exactly the events it
//! handles. It finds the webhook endpoints for `TOLLGATE_PUBLIC_URL/webhooks/stripe`,
//! creates one when there is none (and prints its signing secret, which Stripe shows only
//! then), and sets the events of one whose events differ from
//! [`HANDLED`](crate::usecases::events::HANDLED).

use std::collections::BTreeSet;

use anyhow::bail;
use serde::Serialize;
use tollgate_stripe::Gateway;

use crate::usecases::events::HANDLED;

/// What was done (or, checking only, would be done) to one endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Created,
    Updated,
    Unchanged,
    WouldCreate,
    WouldUpdate,
}

/// One endpoint for Tollgate's URL, after the setup.
#[derive(Debug, Clone, Serialize)]
pub struct EndpointReport {
    /// Stripe's id (`we_...`); `None` when checking found none.
    pub id: Option<String>,
    pub action: Action,
    /// Event types the endpoint gained, and lost (`*` among them when it had every type).
    pub added: Vec<String>,
    pub removed: Vec<String>,
    /// It was disabled, and is (or would be) enabled again.
    pub enabled_again: bool,
}

/// The outcome of a setup.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub url: String,
    pub enabled_events: Vec<String>,
    pub endpoints: Vec<EndpointReport>,
    /// The new endpoint's signing secret: Stripe shows it only in this answer.
    pub secret: Option<String>,
}

impl Report {
    /// Whether the account already was as Tollgate needs it.
    pub fn changed_or_would_change(&self) -> bool {
        self.endpoints.iter().any(|e| e.action != Action::Unchanged)
    }
}

/// Where Stripe sends events for a service reached at `public_url`.
pub fn webhook_url(public_url: &str) -> String {
    format!("{}/webhooks/stripe", public_url.trim_end_matches('/'))
}

/// Creates or corrects the webhook endpoint for `public_url`. With `apply` false, only says
/// what it would do.
pub async fn webhook_endpoint(
    gateway: &Gateway,
    public_url: &str,
    apply: bool,
) -> anyhow::Result<Report> {
    let parsed = url::Url::parse(public_url)
        .map_err(|e| anyhow::anyhow!("TOLLGATE_PUBLIC_URL is not a URL ({e}): {public_url}"))?;
    if gateway.is_live_mode() && parsed.scheme() != "https" {
        bail!(
            "Stripe sends live-mode events to HTTPS endpoints only: set TOLLGATE_PUBLIC_URL to the https:// address of this service"
        );
    }
    let url = webhook_url(public_url);
    let wanted: BTreeSet<&str> = HANDLED.iter().copied().collect();
    let mut report = Report {
        url: url.clone(),
        enabled_events: wanted.iter().map(|e| (*e).to_owned()).collect(),
        endpoints: vec![],
        secret: None,
    };
    let existing: Vec<_> = gateway
        .list_webhook_endpoints()
        .await?
        .into_iter()
        .filter(|e| e.url.trim_end_matches('/') == url)
        .collect();
    if existing.is_empty() {
        if !apply {
            report.endpoints.push(EndpointReport {
                id: None,
                action: Action::WouldCreate,
                added: report.enabled_events.clone(),
                removed: vec![],
                enabled_again: false,
            });
            return Ok(report);
        }
        let created = gateway
            .create_webhook_endpoint(
                &url,
                HANDLED,
                "Tollgate",
                [("tollgate".to_owned(), "setup".to_owned())].into(),
            )
            .await?;
        report.secret = created.secret;
        report.endpoints.push(EndpointReport {
            id: Some(created.id),
            action: Action::Created,
            added: report.enabled_events.clone(),
            removed: vec![],
            enabled_again: false,
        });
        return Ok(report);
    }
    for endpoint in existing {
        let has: BTreeSet<&str> = endpoint.enabled_events.iter().map(String::as_str).collect();
        let added: Vec<String> = wanted.difference(&has).map(|e| (*e).to_owned()).collect();
        let removed: Vec<String> = has.difference(&wanted).map(|e| (*e).to_owned()).collect();
        let same = added.is_empty() && removed.is_empty() && endpoint.enabled;
        let action = match (same, apply) {
            (true, _) => Action::Unchanged,
            (false, false) => Action::WouldUpdate,
            (false, true) => {
                gateway
                    .update_webhook_endpoint_events(&endpoint.id, HANDLED)
                    .await?;
                Action::Updated
            }
        };
        report.endpoints.push(EndpointReport {
            id: Some(endpoint.id),
            action,
            added,
            removed,
            enabled_again: !endpoint.enabled,
        });
    }
    Ok(report)
}

/// What the operator should do next, in words.
pub fn next_steps(report: &Report) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(secret) = &report.secret {
        out.push(format!(
            "Created the webhook endpoint for {}. Set STRIPE_WEBHOOK_SECRET={secret} in Tollgate's settings (Stripe shows this secret only now) and restart it.",
            report.url
        ));
    }
    for e in &report.endpoints {
        let id = e.id.as_deref().unwrap_or("(new)");
        match e.action {
            Action::Created => {}
            Action::Updated => out.push(format!(
                "Updated {id}: {} event type(s) added, {} removed{}. Its signing secret is unchanged.",
                e.added.len(),
                e.removed.len(),
                if e.enabled_again { ", enabled again" } else { "" }
            )),
            Action::Unchanged => out.push(format!(
                "{id} already sends exactly the {} event types Tollgate handles.",
                report.enabled_events.len()
            )),
            Action::WouldCreate => out.push(format!(
                "No webhook endpoint for {}: `tollgate stripe setup` would create one.",
                report.url
            )),
            Action::WouldUpdate => out.push(format!(
                "{id} differs: {} event type(s) to add, {} to remove{}.",
                e.added.len(),
                e.removed.len(),
                if e.enabled_again { ", and it is disabled" } else { "" }
            )),
        }
    }
    if report.secret.is_none()
        && report
            .endpoints
            .iter()
            .any(|e| matches!(e.action, Action::Updated | Action::Unchanged))
    {
        out.push(
            "STRIPE_WEBHOOK_SECRET must be that endpoint's signing secret (Stripe Dashboard, Developers, Webhooks, the endpoint, Signing secret)."
                .into(),
        );
    }
    if report.endpoints.len() > 1 {
        out.push(format!(
            "{} endpoints send to the same URL: each signs with its own secret, so STRIPE_WEBHOOK_SECRET needs every one of them (comma-separated), or delete the extra ones.",
            report.endpoints.len()
        ));
    }
    out
}

/// The README's list of handled event types, as [`HANDLED`] makes it.
pub fn readme_event_list() -> String {
    let mut types: Vec<&str> = HANDLED.to_vec();
    types.sort_unstable();
    types
        .iter()
        .map(|t| format!("- `{t}`\n"))
        .collect::<String>()
}

#[cfg(test)]
mod tests {
    use super::*;

    const START: &str = "<!-- handled-events:start -->\n";
    const END: &str = "<!-- handled-events:end -->";

    #[test]
    fn the_readme_lists_exactly_the_handled_event_types() {
        let readme =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md"))
                .unwrap();
        let start = readme
            .find(START)
            .expect("the README has the handled-events block")
            + START.len();
        let end = readme[start..].find(END).expect("the block ends") + start;
        let listed = &readme[start..end];
        assert_eq!(
            listed.trim(),
            readme_event_list().trim(),
            "the README's event list is out of date; put this between the markers:\n{}",
            readme_event_list()
        );
    }

    #[test]
    fn the_webhook_url_has_one_slash_before_its_path() {
        assert_eq!(
            webhook_url("https://billing.example.com/"),
            "https://billing.example.com/webhooks/stripe"
        );
        assert_eq!(
            webhook_url("https://example.com/tollgate"),
            "https://example.com/tollgate/webhooks/stripe"
        );
    }
}
