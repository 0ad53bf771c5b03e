//! The events the driver sends: Stripe's event envelope around an object, and, for the
//! acknowledgement bench, subscription objects shaped like Stripe's and as large as real
//! ones (2 to 4 kB with their metadata).

use serde_json::{Value, json};

/// A Stripe event around `object`, as Stripe sends it to an endpoint.
pub fn envelope(
    id: &str,
    kind: &str,
    created: u64,
    object: &Value,
    previous: Option<Value>,
) -> String {
    let mut data = json!({ "object": object });
    if let Some(p) = previous {
        data["previous_attributes"] = p;
    }
    json!({
        "id": id,
        "object": "event",
        "api_version": stripe_sandbox::API_VERSION,
        "created": created,
        "data": data,
        "livemode": false,
        "pending_webhooks": 1,
        "request": { "id": format!("req_{}", &id[4..]), "idempotency_key": null },
        "type": kind,
    })
    .to_string()
}

/// A `customer.subscription.updated` event about a subscription nobody has, of about
/// `size` bytes: a tenant that does not exist is named, so the worker only looks it up and
/// sets the event aside (what is measured is the acknowledgement).
pub fn ack_event(run: &str, i: usize, created: u64, size: usize) -> String {
    let sub = format!("sub_bench{run}x{i}");
    let mut object = subscription(
        &sub,
        &format!("cus_bench{run}x{i}"),
        &format!("price_bench{run}x{}", i % 7),
        created,
    );
    object["metadata"] = json!({
        "tenant_id": format!("ten_benchnobody{run}"),
        "order_id": format!("ord_bench{run}x{i}"),
        "customer_id": format!("cust_bench{run}x{i}"),
    });
    let previous = json!({ "cancel_at_period_end": false, "canceled_at": null });
    let id = format!("evt_bench{run}x{i}");
    let kind = "customer.subscription.updated";
    // Metadata up to the size asked for (Stripe allows 50 keys of up to 500 characters);
    // each entry costs its value and about 16 characters of key and quotes.
    let mut missing =
        size.saturating_sub(envelope(&id, kind, created, &object, Some(previous.clone())).len());
    let mut n = 0;
    while missing > 24 && n < 50 {
        let len = (missing - 16).min(500);
        object["metadata"][format!("note_{n}")] = json!(filler(i + n, len));
        missing = missing.saturating_sub(len + 16);
        n += 1;
    }
    envelope(&id, kind, created, &object, Some(previous))
}

/// Text for metadata values: words, as people and systems put there.
fn filler(seed: usize, len: usize) -> String {
    const WORDS: [&str; 12] = [
        "plan", "seat", "team", "annual", "renewal", "migrated", "from", "legacy", "billing",
        "account", "region", "eu-west",
    ];
    let mut s = String::with_capacity(len + 10);
    let mut k = seed;
    while s.len() < len {
        s.push_str(WORDS[k % WORDS.len()]);
        s.push(' ');
        k = k.wrapping_mul(31).wrapping_add(7);
    }
    s.truncate(len);
    s
}

/// A subscription object as Stripe's API version of the sandbox shapes it: one licensed
/// monthly item with its price and plan, periods on the item.
fn subscription(id: &str, customer: &str, price: &str, now: u64) -> Value {
    let start = now - 86_400 * 12;
    let end = start + 86_400 * 30;
    let product = format!("prod_{}", &price[6..]);
    json!({
        "id": id,
        "object": "subscription",
        "application": null,
        "application_fee_percent": null,
        "automatic_tax": { "disabled_reason": null, "enabled": false, "liability": null },
        "billing_cycle_anchor": start,
        "billing_cycle_anchor_config": null,
        "billing_mode": { "flexible": null, "type": "classic" },
        "billing_thresholds": null,
        "cancel_at": null,
        "cancel_at_period_end": true,
        "canceled_at": now,
        "cancellation_details": { "comment": null, "feedback": null, "reason": "cancellation_requested" },
        "collection_method": "charge_automatically",
        "created": start,
        "currency": "usd",
        "customer": customer,
        "days_until_due": null,
        "default_payment_method": format!("pm_{}", &customer[4..]),
        "default_source": null,
        "default_tax_rates": [],
        "description": null,
        "discounts": [],
        "ended_at": null,
        "invoice_settings": { "account_tax_ids": null, "issuer": { "type": "self" } },
        "items": {
            "object": "list",
            "data": [{
                "id": format!("si_{}", &id[4..]),
                "object": "subscription_item",
                "billing_thresholds": null,
                "created": start,
                "current_period_end": end,
                "current_period_start": start,
                "discounts": [],
                "metadata": {},
                "plan": {
                    "id": price, "object": "plan", "active": true, "amount": 1500,
                    "amount_decimal": "1500", "billing_scheme": "per_unit", "created": start,
                    "currency": "usd", "interval": "month", "interval_count": 1, "livemode": false,
                    "metadata": {}, "meter": null, "nickname": null, "product": product,
                    "tiers_mode": null, "transform_usage": null, "trial_period_days": null,
                    "usage_type": "licensed"
                },
                "price": {
                    "id": price, "object": "price", "active": true, "billing_scheme": "per_unit",
                    "created": start, "currency": "usd", "custom_unit_amount": null,
                    "livemode": false, "lookup_key": null, "metadata": {}, "nickname": null,
                    "product": product,
                    "recurring": { "interval": "month", "interval_count": 1, "meter": null,
                                   "trial_period_days": null, "usage_type": "licensed" },
                    "tax_behavior": "unspecified", "tiers_mode": null, "transform_quantity": null,
                    "type": "recurring", "unit_amount": 1500, "unit_amount_decimal": "1500"
                },
                "quantity": 1,
                "subscription": id,
                "tax_rates": []
            }],
            "has_more": false,
            "total_count": 1,
            "url": format!("/v1/subscription_items?subscription={id}")
        },
        "latest_invoice": format!("in_{}", &id[4..]),
        "livemode": false,
        "metadata": {},
        "next_pending_invoice_item_invoice": null,
        "on_behalf_of": null,
        "pause_collection": null,
        "payment_settings": {
            "payment_method_options": null, "payment_method_types": null,
            "save_default_payment_method": "off"
        },
        "pending_invoice_item_interval": null,
        "pending_setup_intent": null,
        "pending_update": null,
        "schedule": null,
        "start_date": start,
        "status": "active",
        "test_clock": null,
        "transfer_data": null,
        "trial_end": null,
        "trial_settings": { "end_behavior": { "missing_payment_method": "create_invoice" } },
        "trial_start": null
    })
}

/// A small, seeded random number generator (SplitMix64): reproducible sizes and orders
/// without a dependency.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `lo..=hi`.
    pub fn between(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next_u64() % (hi - lo + 1) as u64) as usize
    }

    /// Fisher–Yates.
    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            v.swap(i, self.between(0, i));
        }
    }
}
