//! Billing: subscriptions and their invoices, the clock engine that renews them and runs
//! dunning as (test clock) time passes, the customer portal, and billing meters.
//!
//! The modules depend on each other one way, from the bottom up: `periods` (calendar and
//! proration), `discounts`, `invoices`, `subscriptions`, `changes`, then `engine`; `meters`
//! and `portal` stand apart. Nothing here imports Checkout or customers: Checkout starts
//! subscriptions through [`subscriptions::start_subscription`], customer deletion ends them
//! through [`subscriptions::cancel_customer_subscriptions`], and test clocks drive
//! [`engine::run_until`].

pub mod changes;
pub mod discounts;
pub mod engine;
pub mod invoices;
pub mod meters;
pub mod periods;
pub mod portal;
pub mod subscriptions;
