//! Coupons and promotion codes belong to the whole account: a code works on any Checkout
//! page unless its coupon's `applies_to[products]` keeps it to some products.

use serde_json::Value;

use crate::support::{TestSandbox, spawn};

/// A product of one "tenant" (metadata only: Stripe has no tenants) with a one-time price.
async fn tenant_price(sb: &TestSandbox, tenant: &str, amount: i64) -> (String, String) {
    let (status, product) = sb
        .post(
            "/v1/products",
            &format!("name=Course+{tenant}&metadata[tenant_id]={tenant}"),
        )
        .await;
    assert_eq!(status, 200, "{product}");
    let product = product["id"].as_str().unwrap().to_owned();
    let (status, price) = sb
        .post(
            "/v1/prices",
            &format!("product={product}&currency=usd&unit_amount={amount}"),
        )
        .await;
    assert_eq!(status, 200, "{price}");
    (product, price["id"].as_str().unwrap().to_owned())
}

async fn session(sb: &TestSandbox, prices: &[&str], extra: &str) -> (u16, Value) {
    let mut form = String::from("mode=payment&success_url=https%3A%2F%2Fshop.test%2Fok");
    for (i, price) in prices.iter().enumerate() {
        form.push_str(&format!(
            "&line_items[{i}][price]={price}&line_items[{i}][quantity]=1"
        ));
    }
    form.push_str(extra);
    sb.post("/v1/checkout/sessions", &form).await
}

async fn type_code(sb: &TestSandbox, session: &Value, code: &str) -> (u16, String) {
    let res = sb
        .http
        .post(format!(
            "{}/promotion_code",
            session["url"].as_str().unwrap()
        ))
        .form(&[("code", code)])
        .send()
        .await
        .unwrap();
    (res.status().as_u16(), res.text().await.unwrap())
}

#[tokio::test]
async fn a_code_restricted_to_one_tenants_products_gives_nothing_on_anothers_session() {
    let sb = spawn().await;
    let (product_a, price_a) = tenant_price(&sb, "tenant_a", 5000).await;
    let (_, price_b) = tenant_price(&sb, "tenant_b", 3000).await;
    let (status, coupon) = sb
        .post(
            "/v1/coupons",
            &format!("percent_off=100&duration=once&applies_to[products][0]={product_a}"),
        )
        .await;
    assert_eq!(status, 200, "{coupon}");
    assert!(
        coupon.get("applies_to").is_none(),
        "includable: shown only when expanded"
    );
    let coupon_id = coupon["id"].as_str().unwrap();
    let (_, expanded) = sb
        .get(&format!("/v1/coupons/{coupon_id}?expand[]=applies_to"))
        .await;
    assert_eq!(expanded["applies_to"]["products"][0], product_a.as_str());
    let (status, promo) = sb
        .post(
            "/v1/promotion_codes",
            &format!("promotion[type]=coupon&promotion[coupon]={coupon_id}&code=ALLFREE-A"),
        )
        .await;
    assert_eq!(status, 200, "{promo}");

    // On B's page, typed: refused, and nothing comes off.
    let (_, session_b) = session(&sb, &[&price_b], "&allow_promotion_codes=true").await;
    let (status, page) = type_code(&sb, &session_b, "allfree-a").await;
    assert_eq!(status, 400);
    assert!(
        page.contains("isn&#39;t valid for the items in your cart"),
        "{page}"
    );
    let (_, after) = sb
        .get(&format!(
            "/v1/checkout/sessions/{}",
            session_b["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(after["amount_total"], 3000);

    // Through the API on B's products: refused.
    let (status, body) = session(
        &sb,
        &[&price_b],
        &format!(
            "&discounts[0][promotion_code]={}",
            promo["id"].as_str().unwrap()
        ),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["param"], "discounts[0][promotion_code]");

    // On A's page the code, typed in any case, takes all of A's course off.
    let (_, session_a) = session(&sb, &[&price_a], "&allow_promotion_codes=true").await;
    let (status, page) = type_code(&sb, &session_a, "AllFree-A").await;
    assert_eq!(status, 200, "{page}");
    let (_, after) = sb
        .get(&format!(
            "/v1/checkout/sessions/{}",
            session_a["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(after["amount_total"], 0);

    // A cart with both: only A's line is discounted.
    let (status, mixed) = session(
        &sb,
        &[&price_a, &price_b],
        &format!(
            "&discounts[0][promotion_code]={}",
            promo["id"].as_str().unwrap()
        ),
    )
    .await;
    assert_eq!(status, 200, "{mixed}");
    assert_eq!(mixed["amount_subtotal"], 8000);
    assert_eq!(mixed["amount_total"], 3000);
    let (_, lines) = sb
        .get(&format!(
            "/v1/checkout/sessions/{}/line_items",
            mixed["id"].as_str().unwrap()
        ))
        .await;
    let discounts: Vec<i64> = lines["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["amount_discount"].as_i64().unwrap())
        .collect();
    assert_eq!(discounts, [5000, 0]);
}

async fn create_code(sb: &TestSandbox, coupon: &str, code: &str) -> (u16, Value) {
    sb.post(
        "/v1/promotion_codes",
        &format!("promotion[type]=coupon&promotion[coupon]={coupon}&code={code}"),
    )
    .await
}

#[tokio::test]
async fn active_codes_are_unique_account_wide_regardless_of_case() {
    let sb = spawn().await;
    let (_, coupon) = sb.post("/v1/coupons", "percent_off=10").await;
    let coupon = coupon["id"].as_str().unwrap();
    let (status, first) = create_code(&sb, coupon, "SPRING-10").await;
    assert_eq!(status, 200, "{first}");
    let (status, body) = create_code(&sb, coupon, "spring-10").await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["param"], "code");
    // Once the first is inactive, the text is free again; re-activating the first is not.
    let first_id = first["id"].as_str().unwrap();
    sb.post(&format!("/v1/promotion_codes/{first_id}"), "active=false")
        .await;
    let (status, _) = create_code(&sb, coupon, "Spring-10").await;
    assert_eq!(status, 200);
    let (status, body) = sb
        .post(&format!("/v1/promotion_codes/{first_id}"), "active=true")
        .await;
    assert_eq!(status, 400, "{body}");
    // Only letters, digits and dashes.
    let (status, body) = create_code(&sb, coupon, "NO_UNDERSCORE").await;
    assert_eq!(status, 400, "{body}");
}
