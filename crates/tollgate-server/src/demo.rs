//! `tollgate demo`: starts Tollgate on its defaults (SQLite, built-in sandbox) and walks one
//! purchase end to end over HTTP, as a tenant's backend and a paying person would, printing
//! each step.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};
use tollgate_domain::FeeSchedule;
use tollgate_store::NewTenant;

use crate::{Application, Settings};

struct Api {
    http: reqwest::Client,
    base: String,
    key: String,
}

impl Api {
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let mut req = self
            .http
            .request(method.clone(), format!("{}{path}", self.base))
            .bearer_auth(&self.key);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req
            .send()
            .await
            .with_context(|| format!("{method} {path}"))?;
        let status = res.status();
        let value: Value = res
            .json()
            .await
            .with_context(|| format!("reading {method} {path}"))?;
        if !status.is_success() {
            bail!("{method} {path} answered {status}: {value}");
        }
        Ok(value)
    }
}

fn step(n: u32, text: &str) {
    println!("\n[{n}] {text}");
}

pub async fn run(mut settings: Settings) -> anyhow::Result<()> {
    settings.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    settings.stripe_secret_key = None;
    let db = settings.database_url.clone();
    let app = Application::build(settings).await?;
    let base = format!("http://{}", app.addr());
    step(1, "Tollgate is up");
    println!("    API        {base}");
    println!("    database   {}", tollgate_store::redact_url(&db));
    println!(
        "    Stripe     built-in sandbox at {} (offline, no real money)",
        app.sandbox().map(|s| s.url()).unwrap_or_default()
    );

    let (tenant, key) = app
        .state()
        .store
        .create_tenant(&NewTenant {
            name: "Demo Academy".into(),
            success_url_template: Some(
                "https://academy.example/thanks?session_id={CHECKOUT_SESSION_ID}".into(),
            ),
            cancel_url_template: Some("https://academy.example/cart".into()),
            portal_return_url_template: None,
            fees: FeeSchedule::new(1000, 500).map_err(|e| anyhow::anyhow!("{e}"))?,
            ..Default::default()
        })
        .await?;
    step(
        2,
        "A tenant with a 10% platform fee and a 5% organization fee",
    );
    println!("    tenant     {}", tenant.id);
    println!(
        "    api key    {}…  (shown once; stored hashed)",
        &key.secret[..12]
    );
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(20))
        .build()?;
    let api = Api {
        http: http.clone(),
        base: base.clone(),
        key: key.secret.clone(),
    };

    let product = api
        .call(
            reqwest::Method::POST,
            "/v1/products",
            Some(json!({ "kind": "course", "title": "Rust for Billing", "status": "published", "creator_id": "creator_ada", "price": { "unit_amount": 4900 } })),
        )
        .await?;
    let product_id = product["id"].as_str().context("product id")?.to_owned();
    step(3, "A published course at 49.00 USD, synced to Stripe");
    println!(
        "    product    {product_id}  (Stripe {})",
        product["stripe_product_id"].as_str().unwrap_or("-")
    );

    let customer = api
        .call(
            reqwest::Method::POST,
            "/v1/customers",
            Some(
                json!({ "external_user_id": "user-42", "email": "ada@example.com", "name": "Ada" }),
            ),
        )
        .await?;
    let customer_id = customer["id"].as_str().context("customer id")?.to_owned();
    step(4, "The buyer, get-or-created by the tenant's own user id");
    println!(
        "    customer   {customer_id}  (Stripe {})",
        customer["stripe_customer_id"].as_str().unwrap_or("-")
    );

    let session = api
        .call(
            reqwest::Method::POST,
            "/v1/checkout_sessions",
            Some(json!({ "customer": customer_id, "product": product_id })),
        )
        .await?;
    let url = session["url"].as_str().context("session url")?.to_owned();
    step(5, "A Checkout Session, with a pending order behind it");
    println!(
        "    session    {}",
        session["stripe_checkout_session_id"]
            .as_str()
            .unwrap_or_default()
    );
    println!(
        "    order      {}",
        session["order_id"].as_str().unwrap_or_default()
    );
    println!("    pay at     {url}");

    let page = http
        .post(&url)
        .form(&[
            ("card_number", "4242 4242 4242 4242"),
            ("card_expiry", "12 / 34"),
            ("card_cvc", "123"),
        ])
        .send()
        .await?;
    let location = page
        .headers()
        .get("location")
        .and_then(|l| l.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    if page.status() != reqwest::StatusCode::SEE_OTHER {
        bail!("paying did not redirect (status {})", page.status());
    }
    step(
        6,
        "The buyer pays with 4242 4242 4242 4242 on the hosted page",
    );
    println!("    redirected {location}");

    let access_path = format!("/v1/access?customer={customer_id}&product={product_id}");
    let started = Instant::now();
    let access = loop {
        let a = api.call(reqwest::Method::GET, &access_path, None).await?;
        if a["has_access"] == true {
            break a;
        }
        if started.elapsed() > Duration::from_secs(15) {
            bail!("access was not granted within 15 s: the webhook did not arrive");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    step(
        7,
        "Stripe's webhook arrives, is verified, stored and applied: access granted",
    );
    println!(
        "    access     {access}  ({} ms after paying)",
        started.elapsed().as_millis()
    );

    let purchases = api
        .call(
            reqwest::Method::GET,
            &format!("/v1/purchases?customer={customer_id}"),
            None,
        )
        .await?;
    let purchase = &purchases["data"][0];
    let purchase_id = purchase["id"].as_str().context("purchase id")?.to_owned();
    step(8, "The purchase in the ledger, with its revenue split");
    println!(
        "    {purchase_id}: amount {} = platform {} + organization {} + creator {}",
        purchase["amount"],
        purchase["platform_fee"],
        purchase["organization_fee"],
        purchase["creator_payout"]
    );

    let refunded = api
        .call(
            reqwest::Method::POST,
            &format!("/v1/purchases/{purchase_id}/refund"),
            Some(json!({ "reason": "requested_by_customer" })),
        )
        .await?;
    step(
        9,
        "A full refund through Stripe, the split reversed in proportion",
    );
    println!(
        "    status {}: refunded {} (platform {}, organization {}, creator {})",
        refunded["status"],
        refunded["refunded_amount"],
        refunded["refunded_platform_fee"],
        refunded["refunded_organization_fee"],
        refunded["refunded_creator_payout"]
    );
    let access = api.call(reqwest::Method::GET, &access_path, None).await?;
    step(10, "Access after the refund");
    println!("    access     {access}");
    if access["has_access"] != false {
        bail!("access was not revoked after the refund");
    }
    println!("\nDone. `tollgate serve` runs the same service until stopped.");
    app.stop().await
}
