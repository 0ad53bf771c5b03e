//! Customers: one per tenant and external user id.

use serde::Serialize;
use sqlx::Row;
use sqlx::any::AnyRow;
use tollgate_domain::{CustomerId, TenantId};

use crate::{Result, Store, db, now_ms};

#[derive(Debug, Clone, Serialize)]
pub struct Customer {
    pub id: CustomerId,
    #[serde(skip)]
    pub tenant_id: TenantId,
    pub external_user_id: String,
    pub email: Option<String>,
    pub name: Option<String>,
    pub stripe_customer_id: Option<String>,
    pub created_at: i64,
}

impl Customer {
    fn from_row(row: &AnyRow) -> std::result::Result<Self, sqlx::Error> {
        Ok(Self {
            id: CustomerId::from_db(row.try_get("id")?),
            tenant_id: TenantId::from_db(row.try_get("tenant_id")?),
            external_user_id: row.try_get("external_user_id")?,
            email: row.try_get("email")?,
            name: row.try_get("name")?,
            stripe_customer_id: row.try_get("stripe_customer_id")?,
            created_at: row.try_get("created_at")?,
        })
    }
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
        email: Option<&str>,
        name: Option<&str>,
    ) -> Result<(Customer, bool)> {
        let inserted = db(sqlx::query(
            "INSERT INTO customers (id, tenant_id, external_user_id, email, name, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (tenant_id, external_user_id) DO NOTHING",
        )
        .bind(CustomerId::generate().as_str())
        .bind(tenant.as_str())
        .bind(external_user_id)
        .bind(email)
        .bind(name)
        .bind(now_ms())
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
        stripe_id: &str,
    ) -> Result<Customer> {
        self.one(
            &format!(
                "SELECT {COLUMNS} FROM customers WHERE tenant_id = $1 AND stripe_customer_id = $2"
            ),
            tenant,
            stripe_id,
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
        stripe_id: &str,
    ) -> Result<Customer> {
        db(sqlx::query(
            "UPDATE customers SET stripe_customer_id = $3 WHERE tenant_id = $1 AND id = $2 AND stripe_customer_id IS NULL",
        )
        .bind(tenant.as_str())
        .bind(id.as_str())
        .bind(stripe_id)
        .execute(&self.pool)
        .await)?;
        self.customer(tenant, id).await
    }

    /// Updates email and name when given.
    pub async fn update_customer(
        &self,
        tenant: &TenantId,
        id: &CustomerId,
        email: Option<&str>,
        name: Option<&str>,
    ) -> Result<Customer> {
        db(sqlx::query(
            "UPDATE customers SET email = COALESCE($3, email), name = COALESCE($4, name) WHERE tenant_id = $1 AND id = $2",
        )
        .bind(tenant.as_str())
        .bind(id.as_str())
        .bind(email)
        .bind(name)
        .execute(&self.pool)
        .await)?;
        self.customer(tenant, id).await
    }

    /// Customers newest first, `limit` after the cursor.
    pub async fn list_customers(
        &self,
        tenant: &TenantId,
        limit: i64,
        starting_after: Option<&CustomerId>,
    ) -> Result<Vec<Customer>> {
        let rows = match starting_after {
            Some(after) => {
                let cursor = self.customer(tenant, after).await?;
                db(sqlx::query(&format!(
                    "SELECT {COLUMNS} FROM customers WHERE tenant_id = $1 AND (created_at < $2 OR (created_at = $2 AND id < $3)) \
                     ORDER BY created_at DESC, id DESC LIMIT $4"
                ))
                .bind(tenant.as_str())
                .bind(cursor.created_at)
                .bind(cursor.id.as_str())
                .bind(limit)
                .fetch_all(&self.pool)
                .await)?
            }
            None => db(sqlx::query(&format!(
                "SELECT {COLUMNS} FROM customers WHERE tenant_id = $1 ORDER BY created_at DESC, id DESC LIMIT $2"
            ))
            .bind(tenant.as_str())
            .bind(limit)
            .fetch_all(&self.pool)
            .await)?,
        };
        rows.iter().map(|r| db(Customer::from_row(r))).collect()
    }
}
