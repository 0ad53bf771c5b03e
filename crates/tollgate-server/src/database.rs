//! Opening the database with errors that say what to do. A connection pool that cannot
//! connect reports "pool timed out"; before that, a plain TCP connection to PostgreSQL's
//! host and port tells a server that is down, a wrong port and an unknown host apart.

use std::time::Duration;

use anyhow::{Context, bail};
use tollgate_store::{Store, redact_url};

/// How long the first contact with PostgreSQL may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// Connects and applies the migrations.
pub async fn open(url: &str) -> anyhow::Result<Store> {
    let shown = redact_url(url);
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        probe_postgres(url).await?;
    }
    let store = match Store::connect(url).await {
        Ok(s) => s,
        Err(e) => {
            let hint = if url.starts_with("sqlite:") {
                "check that the file's folder exists and that this user may write in it"
            } else {
                "check the user, password and database name in TOLLGATE_DATABASE_URL, and that the database exists (createdb)"
            };
            bail!("cannot open the database {shown}: {e}; {hint}");
        }
    };
    store
        .migrate()
        .await
        .with_context(|| format!("applying migrations to {shown}"))?;
    Ok(store)
}

/// Reaches PostgreSQL's port, or says why not.
async fn probe_postgres(url: &str) -> anyhow::Result<()> {
    let parsed = url::Url::parse(url)
        .with_context(|| format!("TOLLGATE_DATABASE_URL is not a URL: {}", redact_url(url)))?;
    // A socket directory (`?host=/run/postgresql`) or several hosts are the driver's to
    // handle; only the plain host:port form is probed.
    let Some(host) = parsed.host_str().filter(|h| !h.is_empty()) else {
        return Ok(());
    };
    if parsed.query_pairs().any(|(k, _)| k == "host") {
        return Ok(());
    }
    let port = parsed.port().unwrap_or(5432);
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let target = format!("{host}:{port}");
    match tokio::time::timeout(
        PROBE_TIMEOUT,
        tokio::net::TcpStream::connect((host.as_str(), port)),
    )
    .await
    {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => bail!(
            "PostgreSQL does not answer at {target} (connection refused): start it, or fix the host and port in TOLLGATE_DATABASE_URL ({})",
            redact_url(url)
        ),
        Ok(Err(e)) => bail!(
            "cannot reach PostgreSQL at {target}: {e}; check the host name and port in TOLLGATE_DATABASE_URL ({})",
            redact_url(url)
        ),
        Err(_) => bail!(
            "PostgreSQL at {target} did not answer within {} s: check that the host is right and that a firewall lets this machine reach port {port}",
            PROBE_TIMEOUT.as_secs()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_postgres_that_is_down_is_named_with_what_to_do() {
        // Bind and drop: a port on loopback that nothing listens on.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let e = open(&format!("postgres://tg:secret@127.0.0.1:{port}/db"))
            .await
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("does not answer"), "{e}");
        assert!(e.contains(&format!("127.0.0.1:{port}")), "{e}");
        assert!(!e.contains("secret"), "{e}");
        assert!(!e.contains("timed out"), "{e}");
    }

    #[tokio::test]
    async fn a_sqlite_file_in_a_missing_folder_says_so() {
        let e = open("sqlite:///nonexistent-tollgate-dir/x/t.db")
            .await
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("folder exists"), "{e}");
    }
}
