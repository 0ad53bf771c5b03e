//! Hosted pages behind another address: the sandbox listens on every interface and links
//! its Checkout and portal pages from `Config::public_url`.

use std::time::Duration;

use stripe_sandbox::{Config, Sandbox};

#[tokio::test]
async fn pages_are_linked_from_the_public_url_and_served_on_every_interface() {
    let public = "https://payments.shop.test:8443";
    let sandbox = Sandbox::start(
        Config {
            public_url: Some(format!("{public}/")),
            portal_default_configuration: true,
            ..Config::for_tests()
        },
        "0.0.0.0:0".parse().unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(sandbox.url(), public, "clients are told the public address");
    // What a proxy in front of it would reach: the bound port, on any local address.
    let local = format!("http://127.0.0.1:{}", sandbox.addr().port());
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let post = |path: &str, form: String| {
        http.post(format!("{local}{path}"))
            .bearer_auth(crate::support::KEY)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form)
            .send()
    };
    let product: serde_json::Value = post("/v1/products", "name=Hosted".into())
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let price: serde_json::Value = post(
        "/v1/prices",
        format!(
            "product={}&currency=usd&unit_amount=1200",
            product["id"].as_str().unwrap()
        ),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let session: serde_json::Value = post(
        "/v1/checkout/sessions",
        format!(
            "mode=payment&customer_email=b%40example.com&line_items[0][price]={}&line_items[0][quantity]=1&success_url=https%3A%2F%2Fshop.test%2Fok",
            price["id"].as_str().unwrap()
        ),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let url = session["url"].as_str().unwrap();
    let path = url
        .strip_prefix(public)
        .unwrap_or_else(|| panic!("{url} is under {public}"));
    // The page, as forwarded to the bound port, works: its forms post to relative paths.
    let page = http.get(format!("{local}{path}")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(html.contains(&format!(r#"action="{path}""#)), "{html}");
    let paid = http
        .post(format!("{local}{path}"))
        .form(&[("card_number", "4242424242424242")])
        .send()
        .await
        .unwrap();
    assert_eq!(paid.status(), 303);
    assert_eq!(paid.headers()["location"], "https://shop.test/ok");

    let customer: serde_json::Value = post("/v1/customers", "email=c%40example.com".into())
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let portal: serde_json::Value = post(
        "/v1/billing_portal/sessions",
        format!("customer={}", customer["id"].as_str().unwrap()),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let portal_url = portal["url"].as_str().unwrap();
    let portal_path = portal_url.strip_prefix(public).unwrap();
    let page = http
        .get(format!("{local}{portal_path}"))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
}

#[tokio::test]
async fn without_a_public_url_a_sandbox_on_every_interface_links_its_pages_on_loopback() {
    let sandbox = Sandbox::start(Config::for_tests(), "0.0.0.0:0".parse().unwrap())
        .await
        .unwrap();
    assert_eq!(
        sandbox.url(),
        format!("http://127.0.0.1:{}", sandbox.addr().port())
    );
}
