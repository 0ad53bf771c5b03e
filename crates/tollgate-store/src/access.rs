//! The grants the access index is built from: everything a customer holds, whatever it
//! came from.

use tollgate_domain::{CustomerId, TenantId};

use crate::{Grant, Result, Store};

impl Store {
    /// Every grant of every tenant, for building the access index.
    pub async fn all_grants(&self) -> Result<Vec<Grant>> {
        let mut grants = self.all_purchase_grants().await?;
        grants.extend(self.all_subscription_grants().await?);
        Ok(grants)
    }

    /// One customer's grants (to refresh the index after a change).
    pub async fn grants_for_customer(
        &self,
        tenant: &TenantId,
        customer: &CustomerId,
    ) -> Result<Vec<Grant>> {
        let mut grants = self.purchase_grants_for_customer(tenant, customer).await?;
        grants.extend(
            self.subscription_grants_for_customer(tenant, customer)
                .await?,
        );
        Ok(grants)
    }
}
