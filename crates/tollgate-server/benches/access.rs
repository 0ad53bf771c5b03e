//! The access check in process: the in-memory index that `GET /v1/access` answers from.
//! `cargo bench -p tollgate --bench access`

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use tollgate::access::AccessIndex;
use tollgate_domain::{CustomerId, ProductId, PurchaseId, TenantId};
use tollgate_store::{Grant, GrantSource, GrantTarget};

fn bench(c: &mut Criterion) {
    // 100 tenants x 1,000 customers x 5 products: 500,000 grants.
    let tenants: Vec<TenantId> = (0..100).map(|_| TenantId::generate()).collect();
    let products: Vec<ProductId> = (0..5).map(|_| ProductId::generate()).collect();
    let mut grants = Vec::new();
    let mut customers = Vec::new();
    for t in &tenants {
        for _ in 0..1_000 {
            let customer = CustomerId::generate();
            for p in &products {
                grants.push(Grant {
                    tenant_id: t.clone(),
                    customer_id: customer.clone(),
                    target: GrantTarget::Product(p.clone()),
                    source: GrantSource::Purchase(PurchaseId::generate()),
                    expires_at: None,
                });
            }
            customers.push((t.clone(), customer));
        }
    }
    let index = AccessIndex::default();
    index.load(index.ticket(), grants);
    let now = tollgate_domain::Timestamp::now();
    let (t, cust) = &customers[54_321];
    let stranger = CustomerId::generate();
    let other_product = ProductId::generate();

    c.bench_function("access check, granted (500k grants)", |b| {
        b.iter(|| {
            black_box(index.check_product(
                black_box(t),
                black_box(cust),
                black_box(&products[3]),
                now,
            ))
        })
    });
    c.bench_function("access check, unknown customer", |b| {
        b.iter(|| {
            black_box(index.check_product(
                black_box(t),
                black_box(&stranger),
                black_box(&products[0]),
                now,
            ))
        })
    });
    c.bench_function("access check, customer without that product", |b| {
        b.iter(|| {
            black_box(index.check_product(
                black_box(t),
                black_box(cust),
                black_box(&other_product),
                now,
            ))
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
