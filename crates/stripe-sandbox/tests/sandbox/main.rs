//! The sandbox, driven only through HTTP: async-stripe as the client wherever it has the
//! call (so every answer must deserialize into Stripe's own types), raw requests where a
//! typed client cannot send what is being tested.

// A test that cannot go on should stop right there, loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod billing;
mod browser;
mod checkout;
mod hosting;
mod journey;
mod lifecycle;
mod money;
mod promotions;
mod resources;
mod restart;
mod rules;
mod shapes;
mod subscriptions;
mod support;
mod webhooks;
mod wire;
