//! This host's part in a lab of several hosts (`[cluster]`): its presence
//! in the shared store, renewed every few seconds with the boards of its own
//! config, and the lab's hosts with their boards as last read, for listing
//! every board of the lab with its owner host and whether that host is up.

use std::sync::Arc;
use std::time::Duration;

use super::{App, AppError};
use crate::store::{HostPresence, PresentBoard};

/// The shortest secret between hosts accepted: as for the JWT secret.
const MIN_CLUSTER_SECRET_BYTES: usize = 32;

/// The lab's hosts, as this host last read them.
#[derive(Clone, Debug, Default)]
pub struct LabHosts {
    /// This host's name; `None` when it is not part of a cluster.
    pub this_host: Option<String>,
    pub hosts: Vec<HostPresence>,
}

/// Reads and checks the lab's secret between hosts at start.
pub(super) fn check_cluster_secret(config: &crate::config::Config) -> Result<(), AppError> {
    let Some(cluster) = &config.cluster else { return Ok(()) };
    let path = &cluster.secret_file;
    let text = std::fs::read_to_string(path)
        .map_err(|e| AppError::Internal(format!("cannot read cluster.secret_file {}: {e}", path.display())))?;
    if text.trim().len() < MIN_CLUSTER_SECRET_BYTES {
        return Err(AppError::Internal(format!(
            "cluster.secret_file {} holds fewer than {MIN_CLUSTER_SECRET_BYTES} bytes; put one secret in it, the \
             same on every host (for example: head -c 48 /dev/urandom | base64)",
            path.display()
        )));
    }
    Ok(())
}

impl App {
    /// Every host of the lab and its boards, as last read from the store.
    pub fn lab_hosts(&self) -> LabHosts {
        LabHosts {
            this_host: self.config().cluster.as_ref().map(|c| c.name.clone()),
            hosts: self.hosts.lock().unwrap_or_else(|p| p.into_inner()).clone(),
        }
    }

    /// Renews this host's presence every third of `cluster.offline_after_secs`
    /// and reads every host's; `None` when the host is not part of a cluster.
    pub fn start_presence(self: &Arc<Self>) -> Option<tokio::task::JoinHandle<()>> {
        let cluster = self.config().cluster.clone()?;
        let app = Arc::clone(self);
        let every = (cluster.offline_after / 3).max(Duration::from_secs(1));
        Some(tokio::spawn(async move {
            let mut failing = false;
            let mut ticks = tokio::time::interval(every);
            loop {
                ticks.tick().await;
                let boards: Vec<PresentBoard> = app
                    .config()
                    .devices
                    .iter()
                    .map(|d| PresentBoard { id: d.id.clone(), model: d.model.clone() })
                    .collect();
                let renewed = app.store.renew_presence(&cluster.name, &cluster.advertise, boards).await;
                let read = match renewed {
                    Ok(()) => app.store.hosts(cluster.offline_after).await,
                    Err(e) => Err(e),
                };
                match read {
                    Ok(hosts) => {
                        if failing {
                            tracing::info!("renewing this host's presence again");
                        }
                        failing = false;
                        *app.hosts.lock().unwrap_or_else(|p| p.into_inner()) = hosts;
                    }
                    Err(error) => {
                        if !failing {
                            tracing::warn!(%error, "cannot renew this host's presence; the others will show it offline");
                        }
                        failing = true;
                    }
                }
            }
        }))
    }
}
