//! Calls about the Stripe account rather than a tenant's objects: whether the key works
//! (on start and for readiness), and the webhook endpoints Stripe sends events to.

use std::time::Duration;

use stripe::StripeRequest;
use stripe_core::customer::ListCustomer;
use stripe_misc::webhook_endpoint::{
    CreateWebhookEndpoint, CreateWebhookEndpointEnabledEvents, DeleteWebhookEndpoint,
    ListWebhookEndpoint, UpdateWebhookEndpoint, UpdateWebhookEndpointEnabledEvents,
};

use crate::gateway::{Gateway, GatewayError, Metadata, Result};

/// A webhook endpoint as Stripe has it.
#[derive(Debug, Clone)]
pub struct WebhookEndpointInfo {
    pub id: String,
    pub url: String,
    pub enabled_events: Vec<String>,
    /// `false` when Stripe (or someone) disabled it: it receives nothing.
    pub enabled: bool,
    pub metadata: Metadata,
    /// The signing secret: Stripe shows it only in the answer that created the endpoint.
    pub secret: Option<String>,
}

impl From<stripe_misc::WebhookEndpoint> for WebhookEndpointInfo {
    fn from(e: stripe_misc::WebhookEndpoint) -> Self {
        Self {
            id: e.id.to_string(),
            url: e.url,
            enabled_events: e.enabled_events,
            enabled: e.status == "enabled",
            metadata: e.metadata,
            secret: e.secret,
        }
    }
}

impl Gateway {
    /// Proves the key works with the cheapest authenticated call every key Tollgate can use
    /// may make: listing one customer. A restricted key needs "Customers: write" for
    /// Tollgate anyway, which includes reading them; it needs no permission on the balance
    /// or on webhook endpoints (only `tollgate stripe setup` does), so neither is asked.
    pub async fn check_key(&self, timeout: Duration) -> Result<()> {
        ListCustomer::new()
            .limit(1)
            .customize()
            .timeout(timeout)
            .send(&self.client)
            .await?;
        Ok(())
    }

    /// Every webhook endpoint of the account, every page.
    pub async fn list_webhook_endpoints(&self) -> Result<Vec<WebhookEndpointInfo>> {
        let mut out = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let mut req = ListWebhookEndpoint::new().limit(100);
            if let Some(a) = &after {
                req = req.starting_after(a);
            }
            let list = req.send(&self.client).await?;
            after = list.data.last().map(|e| e.id.to_string());
            out.extend(list.data.into_iter().map(WebhookEndpointInfo::from));
            if !list.has_more || after.is_none() {
                return Ok(out);
            }
        }
    }

    /// Creates an endpoint for `events` at `url`; the answer carries its signing secret,
    /// which Stripe never shows again.
    pub async fn create_webhook_endpoint(
        &self,
        url: &str,
        events: &[&str],
        description: &str,
        metadata: Metadata,
    ) -> Result<WebhookEndpointInfo> {
        let events: Vec<CreateWebhookEndpointEnabledEvents> = events
            .iter()
            .map(|e| e.parse().unwrap_or_else(|never| match never {}))
            .collect();
        let e = CreateWebhookEndpoint::new(events, url)
            .description(description)
            .metadata(metadata)
            .send(&self.client)
            .await?;
        let info = WebhookEndpointInfo::from(e);
        if info.secret.is_none() {
            return Err(GatewayError::Undecodable(format!(
                "webhook endpoint {} was created without its signing secret",
                info.id
            )));
        }
        Ok(info)
    }

    /// Sets the endpoint's events to exactly `events`, and enables it.
    pub async fn update_webhook_endpoint_events(
        &self,
        id: &str,
        events: &[&str],
    ) -> Result<WebhookEndpointInfo> {
        let events: Vec<UpdateWebhookEndpointEnabledEvents> = events
            .iter()
            .map(|e| e.parse().unwrap_or_else(|never| match never {}))
            .collect();
        let e = UpdateWebhookEndpoint::new(id)
            .enabled_events(events)
            .disabled(false)
            .send(&self.client)
            .await?;
        Ok(e.into())
    }

    pub async fn delete_webhook_endpoint(&self, id: &str) -> Result<()> {
        DeleteWebhookEndpoint::new(id).send(&self.client).await?;
        Ok(())
    }
}
