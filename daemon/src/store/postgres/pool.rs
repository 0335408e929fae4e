//! A handful of connections to the database, opened when first needed and
//! reused; a connection the server closed is dropped and another opened.
//!
//! Each connection keeps the statements prepared on it: a statement given
//! as text is parsed (and, after a few runs, planned) once per connection,
//! not once per use, and costs one round trip instead of two.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::{Semaphore, SemaphorePermit};
use tokio_postgres::{Client, Config, NoTls, Statement};

/// How long connecting may take before the database counts as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

pub(super) struct Pool {
    config: Config,
    idle: Mutex<Vec<Pooled>>,
    permits: Semaphore,
}

/// An open connection and the statements prepared on it, by their text.
struct Pooled {
    client: Client,
    statements: HashMap<String, Statement>,
}

/// A connection taken from the pool; it goes back when dropped, unless closed.
pub(super) struct Conn<'p> {
    pooled: Option<Pooled>,
    pool: &'p Pool,
    _permit: SemaphorePermit<'p>,
}

impl Pool {
    pub(super) fn new(mut config: Config, size: usize) -> Pool {
        config.connect_timeout(CONNECT_TIMEOUT);
        // A peer gone without closing the connection is noticed within a minute or so.
        config.keepalives_idle(Duration::from_secs(30));
        // Dates are read as text (`date::text`): ISO, whatever DateStyle the
        // server, the database or the role was given (`German` would write 24.11.2026).
        let options = match config.get_options() {
            Some(options) => format!("{options} -c DateStyle=ISO"),
            None => "-c DateStyle=ISO".to_owned(),
        };
        config.options(options);
        Pool { config, idle: Mutex::new(Vec::new()), permits: Semaphore::new(size) }
    }

    /// Opens a connection of its own (the listener's), outside the pool.
    pub(super) async fn connect(
        &self,
    ) -> Result<
        (Client, tokio_postgres::Connection<tokio_postgres::Socket, tokio_postgres::tls::NoTlsStream>),
        tokio_postgres::Error,
    > {
        self.config.connect(NoTls).await
    }

    /// A connection outside the pool, driven by the current runtime and
    /// closed when the client is dropped: for the backend's own runtime.
    pub(super) async fn single(&self) -> Result<Client, tokio_postgres::Error> {
        let (client, connection) = self.connect().await?;
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "a database connection ended");
            }
        });
        Ok(client)
    }

    /// A connection: an idle one, or a new one while fewer than the pool's
    /// size are in use. A new one is driven by the runtime it is opened on:
    /// the daemon's, where operations run.
    pub(super) async fn get(&self) -> Result<Conn<'_>, tokio_postgres::Error> {
        let permit = self.permits.acquire().await.expect("the pool's semaphore is never closed");
        let idle = loop {
            let next = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
            match next {
                Some(pooled) if pooled.client.is_closed() => continue,
                other => break other,
            }
        };
        let pooled = match idle {
            Some(pooled) => pooled,
            None => {
                let (client, connection) = self.config.connect(NoTls).await?;
                tokio::spawn(async move {
                    if let Err(error) = connection.await {
                        tracing::debug!(%error, "a database connection ended");
                    }
                });
                Pooled { client, statements: HashMap::new() }
            }
        };
        Ok(Conn { pooled: Some(pooled), pool: self, _permit: permit })
    }
}

impl Conn<'_> {
    /// `sql` prepared on this connection: prepared on first use, then kept.
    pub(super) async fn statement(&mut self, sql: &str) -> Result<Statement, tokio_postgres::Error> {
        let pooled = self.pooled.as_mut().expect("present until dropped");
        if let Some(statement) = pooled.statements.get(sql) {
            return Ok(statement.clone());
        }
        let statement = pooled.client.prepare(sql).await?;
        pooled.statements.insert(sql.to_owned(), statement.clone());
        Ok(statement)
    }
}

impl std::ops::Deref for Conn<'_> {
    type Target = Client;
    fn deref(&self) -> &Client {
        &self.pooled.as_ref().expect("present until dropped").client
    }
}

impl std::ops::DerefMut for Conn<'_> {
    fn deref_mut(&mut self) -> &mut Client {
        &mut self.pooled.as_mut().expect("present until dropped").client
    }
}

impl Drop for Conn<'_> {
    fn drop(&mut self) {
        if let Some(pooled) = self.pooled.take().filter(|p| !p.client.is_closed()) {
            self.pool.idle.lock().unwrap_or_else(|p| p.into_inner()).push(pooled);
        }
    }
}
