//! A handful of connections to the database, opened when first needed and
//! reused; a connection the server closed is dropped and another opened.

use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::{Semaphore, SemaphorePermit};
use tokio_postgres::{Client, Config, NoTls};

/// How long connecting may take before the database counts as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

pub(super) struct Pool {
    config: Config,
    idle: Mutex<Vec<Client>>,
    permits: Semaphore,
}

/// A connection taken from the pool; it goes back when dropped, unless closed.
pub(super) struct Conn<'p> {
    client: Option<Client>,
    pool: &'p Pool,
    _permit: SemaphorePermit<'p>,
}

impl Pool {
    pub(super) fn new(mut config: Config, size: usize) -> Pool {
        config.connect_timeout(CONNECT_TIMEOUT);
        // A peer gone without closing the connection is noticed within a minute or so.
        config.keepalives_idle(Duration::from_secs(30));
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

    /// A connection: an idle one, or a new one while fewer than the pool's
    /// size are in use. Must run on the store's runtime, which drives it.
    pub(super) async fn get(&self) -> Result<Conn<'_>, tokio_postgres::Error> {
        let permit = self.permits.acquire().await.expect("the pool's semaphore is never closed");
        let idle = loop {
            let next = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
            match next {
                Some(client) if client.is_closed() => continue,
                other => break other,
            }
        };
        let client = match idle {
            Some(client) => client,
            None => {
                let (client, connection) = self.config.connect(NoTls).await?;
                tokio::spawn(async move {
                    if let Err(error) = connection.await {
                        tracing::debug!(%error, "a database connection ended");
                    }
                });
                client
            }
        };
        Ok(Conn { client: Some(client), pool: self, _permit: permit })
    }
}

impl std::ops::Deref for Conn<'_> {
    type Target = Client;
    fn deref(&self) -> &Client {
        self.client.as_ref().expect("present until dropped")
    }
}

impl std::ops::DerefMut for Conn<'_> {
    fn deref_mut(&mut self) -> &mut Client {
        self.client.as_mut().expect("present until dropped")
    }
}

impl Drop for Conn<'_> {
    fn drop(&mut self) {
        if let Some(client) = self.client.take().filter(|c| !c.is_closed()) {
            self.pool.idle.lock().unwrap_or_else(|p| p.into_inner()).push(client);
        }
    }
}
