//! Tollgate: billing for platforms that sell through Stripe on behalf of many tenants.
//! The library behind the `tollgate` binary: settings, the application (HTTP API, webhook
//! inbox workers, access index), its use cases, and the demo.

#![recursion_limit = "256"]

pub mod access;
pub mod app;
pub mod config;
pub mod database;
pub mod demo;
pub mod error;
pub mod http;
pub mod ingest;
pub mod logging;
pub mod maintenance;
pub mod setup;
pub mod state;
pub mod usage_reporter;
pub mod usecases;
pub mod views;
pub mod worker;

pub use app::Application;
pub use config::Settings;
