//! The reference for the access check over HTTP: the smallest axum server that answers
//! `GET /v1/access?customer=&product=` with the same JSON as Tollgate, from a `HashMap`,
//! after looking the bearer key up in another. What Tollgate spends beyond this is its own.
//!
//! Serves on `--port` until killed; `scripts/bench-access-http.sh` runs it beside Tollgate:
//!
//! ```sh
//! cargo bench -p tollgate --bench access_baseline -- --port 18081 --key tg_sk_... \
//!     --customer cust_... --product prd_... --answer '{"has_access":true,...}'
//! ```

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::serve::ListenerExt;
use clap::Parser;
use serde::Deserialize;

#[derive(Parser)]
struct Args {
    #[arg(long, default_value_t = 18081)]
    port: u16,
    /// The API key the answer is for.
    #[arg(long)]
    key: String,
    #[arg(long)]
    customer: String,
    #[arg(long)]
    product: String,
    /// The JSON to answer with (Tollgate's answer to the same question).
    #[arg(long)]
    answer: String,
    /// Passed by `cargo bench` to every bench target; nothing to do with it.
    #[arg(long, hide = true)]
    bench: bool,
}

/// Keys to tenants, and (tenant, customer, product) to the answer.
struct Index {
    keys: HashMap<String, String>,
    answers: HashMap<(String, String, String), Bytes>,
}

#[derive(Deserialize)]
struct AccessQuery {
    customer: String,
    product: String,
}

async fn access(
    State(index): State<Arc<Index>>,
    headers: HeaderMap,
    Query(q): Query<AccessQuery>,
) -> Response {
    let tenant = headers
        .get(header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.strip_prefix("Bearer "))
        .and_then(|k| index.keys.get(k));
    let Some(tenant) = tenant else {
        return StatusCode::UNAUTHORIZED.into_response();
    };
    match index.answers.get(&(tenant.clone(), q.customer, q.product)) {
        Some(body) => ([(header::CONTENT_TYPE, "application/json")], body.clone()).into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let tenant = "ten_baseline".to_owned();
    let index = Index {
        keys: HashMap::from([(args.key, tenant.clone())]),
        answers: HashMap::from([(
            (tenant, args.customer, args.product),
            Bytes::from(args.answer),
        )]),
    };
    let app = Router::new()
        .route("/v1/access", get(access))
        .with_state(Arc::new(index));
    // Tollgate's runtime: tokio's multi-threaded default, one worker per core.
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(async move {
            let listener =
                tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], args.port)))
                    .await?;
            eprintln!(
                "access baseline listening on http://{}",
                listener.local_addr()?
            );
            // TCP_NODELAY, as Tollgate sets it.
            let listener = listener.tap_io(|tcp| {
                let _ = tcp.set_nodelay(true);
            });
            axum::serve(listener, app).await?;
            anyhow::Ok(())
        })
}
