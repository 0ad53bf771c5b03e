//! Each resource through async-stripe: what it creates, answers and emits.

use stripe_billing::billing_meter::{
    CreateBillingMeter, CreateBillingMeterDefaultAggregation,
    CreateBillingMeterDefaultAggregationFormula,
};
use stripe_billing::billing_meter_event::CreateBillingMeterEvent;
use stripe_billing::billing_meter_event_summary::ListIdBillingMeterEventSummary;
use stripe_core::customer::{
    CreateCustomer, DeleteCustomer, ListCustomer, RetrieveCustomer, UpdateCustomer,
};
use stripe_core::event::{ListEvent, RetrieveEvent};
use stripe_product::coupon::{CreateCoupon, DeleteCoupon, RetrieveCoupon};
use stripe_product::price::{CreatePrice, ListPrice, UpdatePrice};
use stripe_product::product::{
    CreateProduct, DeleteProduct, ListProduct, RetrieveProduct, UpdateProduct,
};
use stripe_product::promotion_code::{
    CreatePromotionCode, CreatePromotionCodePromotion, CreatePromotionCodePromotionType,
    ListPromotionCode,
};

use crate::support::{price, spawn};

#[tokio::test]
async fn customers_are_created_found_by_email_updated_and_deleted() {
    let sb = spawn().await;
    let c = CreateCustomer::new()
        .email("jenny@example.com")
        .name("Jenny Rosen")
        .metadata(
            [("tenant_id".to_owned(), "t_1".to_owned())]
                .into_iter()
                .collect::<std::collections::HashMap<_, _>>(),
        )
        .send(&sb.client)
        .await
        .unwrap();
    assert!(c.id.as_str().starts_with("cus_"));
    assert_eq!(c.metadata.as_ref().unwrap()["tenant_id"], "t_1");
    CreateCustomer::new()
        .email("other@example.com")
        .send(&sb.client)
        .await
        .unwrap();

    let found = ListCustomer::new()
        .email("jenny@example.com")
        .send(&sb.client)
        .await
        .unwrap();
    assert_eq!(found.data.len(), 1);
    assert_eq!(found.data[0].id, c.id);

    let updated = UpdateCustomer::new(c.id.clone())
        .name("Jenny R.")
        .send(&sb.client)
        .await
        .unwrap();
    assert_eq!(updated.name.as_deref(), Some("Jenny R."));
    assert_eq!(updated.email.as_deref(), Some("jenny@example.com"));

    let deleted = DeleteCustomer::new(c.id.clone())
        .send(&sb.client)
        .await
        .unwrap();
    assert_eq!(
        deleted.id, c.id,
        "the answer deserializes as a deleted customer"
    );
    let again = RetrieveCustomer::new(c.id.clone())
        .send(&sb.client)
        .await
        .unwrap();
    assert!(matches!(
        again,
        stripe_core::customer::RetrieveCustomerReturned::DeletedCustomer(_)
    ));

    let types: Vec<String> = ListEvent::new()
        .send(&sb.client)
        .await
        .unwrap()
        .data
        .iter()
        .map(|e| e.type_.to_string())
        .collect();
    assert_eq!(
        types,
        [
            "customer.deleted",
            "customer.updated",
            "customer.created",
            "customer.created"
        ]
    );
}

#[tokio::test]
async fn an_update_event_carries_the_previous_values_of_what_changed() {
    let sb = spawn().await;
    let c = CreateCustomer::new()
        .email("old@example.com")
        .send(&sb.client)
        .await
        .unwrap();
    UpdateCustomer::new(c.id.clone())
        .email("new@example.com")
        .send(&sb.client)
        .await
        .unwrap();
    let (_, events) = sb.get("/v1/events?type=customer.updated").await;
    let event = &events["data"][0];
    assert_eq!(event["data"]["object"]["email"], "new@example.com");
    assert_eq!(
        event["data"]["previous_attributes"],
        serde_json::json!({ "email": "old@example.com" })
    );
    assert_eq!(event["api_version"], stripe_sandbox::API_VERSION);
    let typed = RetrieveEvent::new(event["id"].as_str().unwrap())
        .send(&sb.client)
        .await
        .unwrap();
    assert_eq!(typed.type_.as_str(), "customer.updated");
}

#[tokio::test]
async fn products_and_prices_are_created_listed_archived_and_looked_up_by_key() {
    let sb = spawn().await;
    let monthly = price(&sb, "Pro", 1500, Some("month")).await;
    assert_eq!(monthly.type_, stripe_shared::PriceType::Recurring);
    assert_eq!(monthly.recurring.as_ref().unwrap().interval_count, 1);
    let product = RetrieveProduct::new(monthly.product.id().as_str())
        .send(&sb.client)
        .await
        .unwrap();
    assert_eq!(product.name, "Pro");

    let annual = CreatePrice::new(stripe_types::Currency::USD)
        .product(product.id.as_str())
        .unit_amount(15000)
        .lookup_key("pro_annual")
        .recurring(stripe_product::price::CreatePriceRecurring::new(
            stripe_product::price::CreatePriceRecurringInterval::Year,
        ))
        .send(&sb.client)
        .await
        .unwrap();
    let by_key = ListPrice::new()
        .lookup_keys(vec!["pro_annual".to_owned()])
        .send(&sb.client)
        .await
        .unwrap();
    assert_eq!(by_key.data.len(), 1);
    assert_eq!(by_key.data[0].id, annual.id);

    let (status, body) = sb
        .post(
            "/v1/prices",
            &format!(
                "currency=usd&unit_amount=1&product={}&lookup_key=pro_annual",
                product.id
            ),
        )
        .await;
    assert_eq!(status, 400);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("already uses that lookup key")
    );

    UpdatePrice::new(monthly.id.clone())
        .active(false)
        .send(&sb.client)
        .await
        .unwrap();
    let active = ListPrice::new()
        .active(true)
        .product(product.id.as_str())
        .send(&sb.client)
        .await
        .unwrap();
    assert_eq!(
        active.data.iter().map(|p| p.id.clone()).collect::<Vec<_>>(),
        vec![annual.id.clone()]
    );

    let archived = UpdateProduct::new(product.id.clone())
        .active(false)
        .send(&sb.client)
        .await
        .unwrap();
    assert!(!archived.active);
    assert_eq!(
        ListProduct::new()
            .active(true)
            .send(&sb.client)
            .await
            .unwrap()
            .data
            .len(),
        0
    );

    let err = DeleteProduct::new(product.id.clone())
        .send(&sb.client)
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("one or more user-created prices"),
        "{err}"
    );
    let bare = CreateProduct::new("Bare").send(&sb.client).await.unwrap();
    assert_eq!(
        DeleteProduct::new(bare.id.clone())
            .send(&sb.client)
            .await
            .unwrap()
            .id,
        bare.id
    );
}

#[tokio::test]
async fn a_recurring_interval_over_a_year_is_refused() {
    let sb = spawn().await;
    let (status, body) = sb
        .post("/v1/prices", "currency=usd&unit_amount=100&product_data[name]=x&recurring[interval]=month&recurring[interval_count]=13")
        .await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["param"], "recurring[interval_count]");
}

#[tokio::test]
async fn coupons_and_promotion_codes_are_created_listed_and_deleted() {
    let sb = spawn().await;
    let coupon = CreateCoupon::new()
        .percent_off(25.0)
        .id("LAUNCH25")
        .send(&sb.client)
        .await
        .unwrap();
    assert_eq!(coupon.id.as_str(), "LAUNCH25");
    assert!(coupon.valid);
    let mut promotion = CreatePromotionCodePromotion::new(CreatePromotionCodePromotionType::Coupon);
    promotion.coupon = Some(coupon.id.to_string());
    let promo = CreatePromotionCode::new(promotion)
        .code("SPRING")
        .max_redemptions(5)
        .send(&sb.client)
        .await
        .unwrap();
    assert_eq!(promo.code, "SPRING");
    assert!(promo.active);
    let listed = ListPromotionCode::new()
        .code("SPRING")
        .send(&sb.client)
        .await
        .unwrap();
    assert_eq!(listed.data.len(), 1);

    let (status, body) = sb
        .post(
            "/v1/promotion_codes",
            &format!(
                "promotion[type]=coupon&promotion[coupon]={}&code=spring",
                coupon.id
            ),
        )
        .await;
    assert_eq!(
        status, 400,
        "codes are unique among active codes, whatever the case: {body}"
    );

    assert_eq!(
        DeleteCoupon::new(coupon.id.clone())
            .send(&sb.client)
            .await
            .unwrap()
            .id,
        coupon.id
    );
    assert!(
        RetrieveCoupon::new(coupon.id.clone())
            .send(&sb.client)
            .await
            .is_err()
    );

    let (status, _) = sb
        .post("/v1/coupons", "percent_off=10&amount_off=100&currency=usd")
        .await;
    assert_eq!(
        status, 400,
        "percent_off and amount_off together are refused"
    );
}

#[tokio::test]
async fn events_list_by_type_wildcard_and_created() {
    let sb = spawn().await;
    let p = price(&sb, "Thing", 100, None).await;
    let all = ListEvent::new().limit(100).send(&sb.client).await.unwrap();
    let types: Vec<String> = all.data.iter().map(|e| e.type_.to_string()).collect();
    assert_eq!(types, ["price.created", "product.created"]);
    let prices = ListEvent::new()
        .type_("price.*")
        .send(&sb.client)
        .await
        .unwrap();
    assert_eq!(prices.data.len(), 1);
    let (_, raw) = sb.get("/v1/events?type=price.*").await;
    assert_eq!(raw["data"][0]["data"]["object"]["id"], p.id.as_str());
    let (_, later) = sb
        .get(&format!("/v1/events?created[gt]={}", p.created + 3600))
        .await;
    assert_eq!(later["data"].as_array().unwrap().len(), 0);
}

#[tokio::test]
async fn meter_events_are_summed_and_a_repeated_identifier_is_refused() {
    let sb = spawn().await;
    let customer = CreateCustomer::new()
        .email("usage@example.com")
        .send(&sb.client)
        .await
        .unwrap();
    let meter = CreateBillingMeter::new(
        CreateBillingMeterDefaultAggregation::new(CreateBillingMeterDefaultAggregationFormula::Sum),
        "API calls",
        "api_call",
    )
    .send(&sb.client)
    .await
    .unwrap();
    let t = chrono::Utc::now().timestamp();
    for (identifier, value) in [("u-1", "3"), ("u-2", "4")] {
        let payload = [
            ("stripe_customer_id".to_owned(), customer.id.to_string()),
            ("value".to_owned(), value.to_owned()),
        ];
        CreateBillingMeterEvent::new(
            "api_call",
            payload
                .into_iter()
                .collect::<std::collections::HashMap<_, _>>(),
        )
        .identifier(identifier)
        .timestamp(t)
        .send(&sb.client)
        .await
        .unwrap();
    }
    let (status, body) = sb
        .post("/v1/billing/meter_events", &format!("event_name=api_call&identifier=u-1&payload[stripe_customer_id]={}&payload[value]=3", customer.id))
        .await;
    assert_eq!(status, 400, "{body}");
    let summaries =
        ListIdBillingMeterEventSummary::new(meter.id.clone(), customer.id.as_str(), t + 1, t - 60)
            .send(&sb.client)
            .await
            .unwrap();
    assert_eq!(summaries.data[0].aggregated_value, 7.0);
}
