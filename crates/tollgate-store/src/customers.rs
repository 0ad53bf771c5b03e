//! Customers: one per tenant and external user id.

use sqlx::Row;
use sqlx::any::AnyRow;
use tollgate_domain::{CustomerId, Email, StripeCustomerId, TenantId, Timestamp};

use crate::{Result, Store, db, id_col, opt_id_col, ts_col};

#[derive(Debug, Clone)]
pub struct Customer {
    pub id: CustomerId,
    pub tenant_id: TenantId,
    pub external_user_id: String,
    pub email: Option<Email>,
    pub name: Option<String>,
    pub stripe_customer_id: Option<StripeCustomerId>,
    pub created_at: Timestamp,
}

impl Customer {
    fn from_row(row: &AnyRow) -> std::result::Result<Self, sqlx::Error> {
        Ok(Self {
            id: id_col(row, "id", CustomerId::from_db)?,
            tenant_id: id_col(row, "tenant_id", TenantId::from_db)?,
            external_user_id: row.try_get("external_user_id")?,
            email: opt_id_col(row, "email", Email::from_db)?,
            name: row.try_get("name")?,
            stripe_customer_id: opt_id_col(row, "stripe_customer_id", StripeCustomerId::from_db)?,
            created_at: ts_col(row, "created_at")?,
        })
    }
}

/// Filters for listing customers (each narrows the list).
#[derive(Debug, Clone, Default)]
pub struct CustomerFilter {
    pub external_user_id: Option<String>,
    pub email: Option<Email>,
}

const COLUMNS: &str =
    "id, tenant_id, external_user_id, email, name, stripe_customer_id, created_at";

impl Store {
    /// The customer for `(tenant, external_user_id)`, created if there is none. Concurrent
    /// calls meet on the unique constraint and all get the same row.
    pub async fn get_or_create_customer(
        &self,
        tenant: &TenantId,
        external_user_id: &str,
        email: Option<&Email>,
        name: Option<&str>,
    ) -> Result<(Customer, bool)> {
        let inserted = db(sqlx::query(
            "INSERT INTO customers (id, tenant_id, external_user_id, email, name, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (tenant_id, external_user_id) DO NOTHING",
        )
        .bind(CustomerId::generate().as_str())
        .bind(tenant.as_str())
        .bind(external_user_id)
        .bind(email.map(Email::as_str))
        .bind(name)
        .bind(Timestamp::now().secs())
        .execute(&self.pool)
        .await)?
        .rows_affected()
            == 1;
        let row = db(sqlx::query(&format!(
            "SELECT {COLUMNS} FROM customers WHERE tenant_id = $1 AND external_user_id = $2"
        ))
        .bind(tenant.as_str())
        .bind(external_user_id)
        .fetch_one(&self.pool)
        .await)?;
        Ok((db(Customer::from_row(&row))?, inserted))
    }

    /// The tenant's customer Stripe knows by this id.
    pub async fn customer_by_stripe_id(
        &self,
        tenant: &TenantId,
        stripe_id: &StripeCustomerId,
    ) -> Result<Customer> {
        self.one(
            &format!(
                "SELECT {COLUMNS} FROM customers WHERE tenant_id = $1 AND stripe_customer_id = $2"
            ),
            tenant,
            stripe_id.as_str(),
            Customer::from_row,
        )
        .await
    }

    pub async fn customer(&self, tenant: &TenantId, id: &CustomerId) -> Result<Customer> {
        self.one(
            &format!("SELECT {COLUMNS} FROM customers WHERE tenant_id = $1 AND id = $2"),
            tenant,
            id.as_str(),
            Customer::from_row,
        )
        .await
    }

    /// Records the Stripe customer, unless one is recorded already; returns the one that stands.
    pub async fn set_stripe_customer(
        &self,
        tenant: &TenantId,
        id: &CustomerId,
        stripe_id: &StripeCustomerId,
    ) -> Result<Customer> {
        db(sqlx::query(
            "UPDATE customers SET stripe_customer_id = $3 WHERE tenant_id = $1 AND id = $2 AND stripe_customer_id IS NULL",
        )
        .bind(tenant.as_str())
        .bind(id.as_str())
        .bind(stripe_id.as_str())
        .execute(&self.pool)
        .await)?;
        self.customer(tenant, id).await
    }

    /// Updates email and name when given.
    pub async fn update_customer(
        &self,
        tenant: &TenantId,
        id: &CustomerId,
        email: Option<&Email>,
        name: Option<&str>,
    ) -> Result<Customer> {
        db(sqlx::query(
            "UPDATE customers SET email = COALESCE($3, email), name = COALESCE($4, name) WHERE tenant_id = $1 AND id = $2",
        )
        .bind(tenant.as_str())
        .bind(id.as_str())
        .bind(email.map(Email::as_str))
        .bind(name)
        .execute(&self.pool)
        .await)?;
        self.customer(tenant, id).await
    }

    /// Customers newest first, `limit` after the cursor, narrowed by `f`.
    pub async fn list_customers(
        &self,
        tenant: &TenantId,
        f: &CustomerFilter,
        limit: i64,
        starting_after: Option<&CustomerId>,
    ) -> Result<Vec<Customer>> {
        let (after_created, after_id) = match starting_after {
            Some(id) => {
                let c = self.customer(tenant, id).await?;
                (c.created_at.secs(), c.id.to_string())
            }
            None => (i64::MAX, String::new()),
        };
        let rows = db(sqlx::query(&format!(
            "SELECT {COLUMNS} FROM customers WHERE tenant_id = $1 AND ($2 = '' OR external_user_id = $2) \
             AND ($3 = '' OR lower(email) = lower($3)) \
             AND ($5 = '' OR created_at < $4 OR (created_at = $4 AND id < $5)) \
             ORDER BY created_at DESC, id DESC LIMIT $6"
        ))
        .bind(tenant.as_str())
        .bind(f.external_user_id.as_deref().unwrap_or(""))
        .bind(f.email.as_ref().map(Email::as_str).unwrap_or(""))
        .bind(after_created)
        .bind(&after_id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await)?;
        rows.iter().map(|r| db(Customer::from_row(r))).collect()
    }
}
