//! One id type per entity, each a prefixed random string (`ten_...`, `pur_...`), so that an
//! id of one kind cannot be passed where another is expected.

use rand::Rng;
use rand::distr::Alphanumeric;

/// `n` random letters and digits.
fn random_tail(n: usize) -> String {
    rand::rng()
        .sample_iter(&Alphanumeric)
        .take(n)
        .map(char::from)
        .collect()
}

/// An unguessable token (leases, claims): 32 random letters and digits.
pub fn random_token() -> String {
    random_tail(32)
}

macro_rules! def_id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub const PREFIX: &'static str = $prefix;

            /// A fresh random id.
            pub fn generate() -> Self {
                Self(format!("{}_{}", $prefix, random_tail(24)))
            }

            /// Wraps an id read back from storage or a request; `None` if the prefix is wrong.
            pub fn parse(s: &str) -> Option<Self> {
                let ok = s.strip_prefix($prefix).is_some_and(|rest| {
                    rest.starts_with('_') && rest.len() > 1 && rest.len() <= 64
                        && rest[1..].bytes().all(|b| b.is_ascii_alphanumeric())
                });
                ok.then(|| Self(s.to_owned()))
            }

            /// Wraps a stored id without checking it (ids the database handed back).
            pub fn from_db(s: String) -> Self {
                Self(s)
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

def_id!(/// A tenant: one platform customer of Tollgate.
    TenantId, "ten");
def_id!(/// A tenant API key's id (not the secret).
    ApiKeyId, "key");
def_id!(/// A tenant's customer.
    CustomerId, "cus");
def_id!(/// A product in a tenant's catalogue.
    ProductId, "prod");
def_id!(/// A price of a product.
    PriceId, "price");
def_id!(/// An order: one checkout of one or more items.
    OrderId, "ord");
def_id!(/// One line of an order.
    OrderItemId, "oi");
def_id!(/// A seat booking for an event product.
    BookingId, "bk");
def_id!(/// A purchase: one paid order item, with its revenue split.
    PurchaseId, "pur");
def_id!(/// A refund of a purchase.
    RefundId, "rf");
def_id!(/// A customer's subscription to a plan, mirrored from Stripe.
    SubscriptionId, "sub");
def_id!(/// Something a plan grants besides itself.
    EntitlementId, "ent");
def_id!(/// A tenant's billing meter for one usage event name.
    MeterId, "mtr");
def_id!(/// A coupon: a discount that promotion codes carry.
    CouponId, "coupon");
def_id!(/// A customer-facing code for a coupon.
    PromotionCodeId, "promo");
def_id!(/// One report of metered usage.
    UsageRecordId, "ur");
def_id!(/// A new price put in place of an old one.
    PriceMigrationId, "pmig");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_id_parses_back_and_a_foreign_prefix_does_not() {
        let id = PurchaseId::generate();
        assert_eq!(PurchaseId::parse(id.as_str()), Some(id.clone()));
        assert!(PurchaseId::parse("ord_abc").is_none());
        assert!(PurchaseId::parse("pur_").is_none());
        assert!(PurchaseId::parse("pur_a'b").is_none());
        assert!(PurchaseId::parse("purchase_abc").is_none());
    }
}
