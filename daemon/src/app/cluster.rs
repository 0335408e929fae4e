//! This host's part in a lab of several hosts (`[cluster]`): its presence
//! in the shared store, renewed every few seconds with the boards of its own
//! config, and the lab's hosts with their boards as last read, for listing
//! every board of the lab with its owner host and whether that host is up.

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;

use super::{App, AppError, DeviceInfo, RemoteBoard};
use crate::config::Config;
use crate::store::{HostPresence, PresentBoard, PresentCamera};

/// The shortest secret between hosts accepted: as for the JWT secret.
const MIN_CLUSTER_SECRET_BYTES: usize = 32;

/// How far a host's clock may be from the lab database's before it says
/// so: every host starts and ends its own boards' sessions by its own clock.
const CLOCK_TOLERANCE: Duration = Duration::from_secs(1);

/// How far this host's clock is from the lab database's, read each time it
/// renews its presence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClockOffset {
    /// This host's clock minus the database's, in microseconds (negative:
    /// behind), taken at the middle of the round trip.
    pub ahead_us: i64,
    /// The round trip of the reading: it is good to within half of it.
    pub round_trip_us: i64,
}

impl ClockOffset {
    /// From this host's clock just `before` and `after` asking, and the
    /// `database`'s clock in its answer.
    pub fn measure(before: Timestamp, after: Timestamp, database: Timestamp) -> ClockOffset {
        let (before, after) = (before.as_microsecond(), after.as_microsecond());
        let round_trip_us = after.saturating_sub(before).max(0);
        ClockOffset {
            ahead_us: before.saturating_add(round_trip_us / 2).saturating_sub(database.as_microsecond()),
            round_trip_us,
        }
    }

    /// Whether the two clocks are more than [`CLOCK_TOLERANCE`] apart
    /// however the round trip divided.
    pub fn is_off(&self) -> bool {
        let least = self.ahead_us.unsigned_abs().saturating_sub((self.round_trip_us / 2).unsigned_abs());
        u128::from(least) > CLOCK_TOLERANCE.as_micros()
    }
}

/// The lab's hosts, as this host last read them.
#[derive(Clone, Debug, Default)]
pub struct LabHosts {
    /// This host's name; `None` when it is not part of a cluster.
    pub this_host: Option<String>,
    pub hosts: Vec<HostPresence>,
}

/// The lab's hosts as this host last read them, and the lab-wide board
/// list made from them. Every `GET /slots` on a host of a cluster looks its
/// board up in that list, so it is made once per reading of the hosts (or
/// reload of the config), not per request.
#[derive(Debug, Default)]
pub(super) struct Lab {
    hosts: Vec<HostPresence>,
    /// This host's clock against the database's, at the last renewal.
    clock: Option<ClockOffset>,
    /// The boards, and the config they were made with.
    boards: Option<(Arc<Config>, Arc<[DeviceInfo]>)>,
}

/// The lab's secret between hosts; never printed.
pub(super) struct Secret(Vec<u8>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// Reads and checks the lab's secret between hosts at start; `None`
/// without `[cluster]`.
pub(super) fn read_cluster_secret(config: &crate::config::Config) -> Result<Option<Secret>, AppError> {
    let Some(cluster) = &config.cluster else { return Ok(None) };
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
    Ok(Some(Secret(text.trim().as_bytes().to_vec())))
}

/// The addresses the other hosts' advertised names resolve to. A name that
/// does not resolve is left out (its host is not exempt from the caps).
async fn peer_addresses(hosts: &[HostPresence], this_host: &str) -> Vec<std::net::IpAddr> {
    let mut addresses = Vec::new();
    for host in hosts.iter().filter(|h| h.name != this_host) {
        let Some(authority) = advertised_authority(&host.advertise) else { continue };
        if let Ok(resolved) = tokio::net::lookup_host(authority).await {
            addresses.extend(resolved.map(|a| a.ip()));
        }
    }
    addresses.sort_unstable();
    addresses.dedup();
    addresses
}

/// `host:port` of an advertised `http://host[:port][/...]` address.
fn advertised_authority(advertise: &str) -> Option<String> {
    let rest = advertise.strip_prefix("http://")?;
    let authority = rest.split('/').next().filter(|a| !a.is_empty())?;
    // A port is digits after the last ':' outside an IPv6 literal's brackets.
    let has_port = authority
        .rsplit_once(':')
        .is_some_and(|(_, port)| !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()))
        && !authority.ends_with(']');
    Some(if has_port { authority.to_owned() } else { format!("{authority}:80") })
}

impl App {
    /// Whether `ip` is another host of the lab: its connections carry many
    /// clients (whose addresses it signs), so they are not held to the
    /// connection cap per address.
    pub fn is_peer_address(&self, ip: std::net::IpAddr) -> bool {
        self.peer_addresses.read().unwrap_or_else(|p| p.into_inner()).contains(&ip)
    }

    /// The lab's secret between hosts; `None` on a lab of one host.
    pub fn cluster_secret(&self) -> Option<&[u8]> {
        self.cluster_secret.as_ref().map(|s| s.0.as_slice())
    }

    /// The boards of this host's config as the other hosts show them.
    fn present_boards(&self) -> Vec<PresentBoard> {
        self.config()
            .devices
            .iter()
            .map(|d| {
                let board = self.devices.board(&d.id);
                PresentBoard {
                    id: d.id.clone(),
                    model: d.model.clone(),
                    name: d.name.clone(),
                    plugin: d.plugin.clone(),
                    baud: d.baud,
                    online: board.as_ref().is_some_and(|b| b.is_online()),
                    health: board.as_ref().map_or("unknown", |b| b.health().as_str()).to_owned(),
                    health_reason: board.as_ref().and_then(|b| b.health().reason().map(str::to_owned)),
                    in_use: board.as_ref().is_some_and(|b| self.device_in_use(b)),
                    camera: self.cameras.get(&d.id).map(|camera| PresentCamera {
                        state: camera.state().as_str().to_owned(),
                        visibility: camera.config().map_or("holder", |c| c.visibility.as_str()).to_owned(),
                        viewers: camera.viewers(),
                    }),
                }
            })
            .collect()
    }

    /// Every board of a lab of several hosts, the same list on every host:
    /// hosts by name, each one's boards in its config order. This host's
    /// come from its running config, the others' from their presence rows.
    /// A board id another host already listed is left out (ids name
    /// boards lab-wide; the first by host name keeps it).
    pub(super) fn lab_devices(&self, config: &Arc<Config>, this_host: &str) -> Arc<[DeviceInfo]> {
        if let Some((made_with, boards)) = &self.lab.read().unwrap_or_else(|p| p.into_inner()).boards
            && Arc::ptr_eq(made_with, config)
        {
            return Arc::clone(boards);
        }
        let mut lab = self.lab.write().unwrap_or_else(|p| p.into_inner());
        let boards: Arc<[DeviceInfo]> = make_lab_devices(&lab.hosts, config, this_host).into();
        lab.boards = Some((Arc::clone(config), Arc::clone(&boards)));
        boards
    }

    /// How far this host's clock was from the lab database's at its last
    /// renewal; `None` on a lab of one host, or before the first.
    pub fn lab_clock(&self) -> Option<ClockOffset> {
        self.lab.read().unwrap_or_else(|p| p.into_inner()).clock
    }

    /// Keeps the clock's reading, and says when the clock goes off the
    /// database's, or comes back.
    fn note_clock(&self, clock: ClockOffset) {
        let mut lab = self.lab.write().unwrap_or_else(|p| p.into_inner());
        let was_off = lab.clock.is_some_and(|c| c.is_off());
        lab.clock = Some(clock);
        drop(lab);
        match (was_off, clock.is_off()) {
            (false, true) => tracing::warn!(
                ahead_ms = clock.ahead_us / 1000,
                "this host's clock is more than {} s off the lab database's: it starts and ends its boards' \
                 sessions at the wrong times; set up NTP (systemd-timesyncd) on every host of the lab",
                CLOCK_TOLERANCE.as_secs()
            ),
            (true, false) => tracing::info!(
                ahead_ms = clock.ahead_us / 1000,
                "this host's clock agrees with the lab database's again"
            ),
            _ => {}
        }
    }

    /// Every host of the lab and its boards, as last read from the store.
    pub fn lab_hosts(&self) -> LabHosts {
        LabHosts {
            this_host: self.config().cluster.as_ref().map(|c| c.name.clone()),
            hosts: self.lab.read().unwrap_or_else(|p| p.into_inner()).hosts.clone(),
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
                let boards = app.present_boards();
                let before = app.now();
                let renewed = app.store.renew_presence(&cluster.name, &cluster.advertise, boards).await;
                let after = app.now();
                let read = match renewed {
                    Ok(database_clock) => {
                        if let Some(database_clock) = database_clock {
                            app.note_clock(ClockOffset::measure(before, after, database_clock));
                        }
                        app.store.hosts(cluster.offline_after).await
                    }
                    Err(e) => Err(e),
                };
                match read {
                    Ok(hosts) => {
                        if failing {
                            tracing::info!("renewing this host's presence again");
                        }
                        failing = false;
                        let peers = peer_addresses(&hosts, &cluster.name).await;
                        *app.peer_addresses.write().unwrap_or_else(|p| p.into_inner()) = peers;
                        let mut lab = app.lab.write().unwrap_or_else(|p| p.into_inner());
                        lab.hosts = hosts;
                        lab.boards = None;
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

/// The lab's boards from its hosts' presence rows and this host's config
/// (see [`App::lab_devices`]).
fn make_lab_devices(hosts: &[HostPresence], config: &Config, this_host: &str) -> Vec<DeviceInfo> {
    let mut names: Vec<&str> = hosts.iter().map(|h| h.name.as_str()).filter(|n| *n != this_host).collect();
    names.push(this_host);
    names.sort_unstable();
    let mut out: Vec<DeviceInfo> = Vec::new();
    for name in names {
        let start = out.len();
        if name == this_host {
            for d in &config.devices {
                let mut info = super::calendar::device_info(0, d);
                info.host = Some(this_host.to_owned());
                out.push(info);
            }
        } else if let Some(host) = hosts.iter().find(|h| h.name == name) {
            for b in &host.boards {
                out.push(DeviceInfo {
                    number: 0,
                    id: b.id.clone(),
                    name: if b.name.is_empty() { b.id.clone() } else { b.name.clone() },
                    model: b.model.clone(),
                    plugin: b.plugin.clone(),
                    port: None,
                    baud: b.baud,
                    host: Some(host.name.clone()),
                    remote: Some(RemoteBoard {
                        advertise: host.advertise.clone(),
                        online: host.online && b.online,
                        host_online: host.online,
                        // An offline host's boards answer nothing: their health is unknown.
                        health: if host.online { b.health.clone() } else { "unknown".to_owned() },
                        health_reason: b.health_reason.clone().filter(|_| host.online),
                        in_use: host.online && b.in_use,
                        camera: b.camera.clone().filter(|_| host.online),
                    }),
                });
            }
        }
        let mut i = start;
        while i < out.len() {
            if out[..start].iter().any(|d| d.id == out[i].id) {
                out.remove(i);
            } else {
                i += 1;
            }
        }
    }
    for (number, d) in out.iter_mut().enumerate() {
        d.number = number;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clock_is_read_at_the_middle_of_the_round_trip_and_off_only_past_its_uncertainty() {
        let at = |us: i64| Timestamp::from_microsecond(1_796_400_000_000_000 + us).unwrap();
        // Asked at 0, answered at 40 ms: the database said 20 ms, as this host's clock does.
        let even = ClockOffset::measure(at(0), at(40_000), at(20_000));
        assert_eq!(even, ClockOffset { ahead_us: 0, round_trip_us: 40_000 });
        assert!(!even.is_off());
        // A Raspberry Pi that booted without a clock, an hour behind.
        let behind = ClockOffset::measure(at(0), at(2_000), at(3_600_001_000));
        assert_eq!(behind.ahead_us, -3_600_000_000);
        assert!(behind.is_off());
        // 1.2 s ahead, but over a 1 s round trip: it may be only 0.7 s.
        assert!(!ClockOffset::measure(at(0), at(1_000_000), at(-700_000)).is_off());
        assert!(ClockOffset::measure(at(0), at(100_000), at(-1_200_000)).is_off());
        // A clock stepped back while asking counts no round trip.
        assert_eq!(ClockOffset::measure(at(5_000), at(0), at(5_000)).round_trip_us, 0);
    }

    fn host(name: &str, online: bool, boards: &[&str]) -> HostPresence {
        let board = |id: &&str| PresentBoard {
            id: (*id).to_owned(),
            model: "uno".to_owned(),
            name: String::new(),
            plugin: "stk500v1".to_owned(),
            baud: 115_200,
            online: true,
            health: "ok".to_owned(),
            health_reason: None,
            in_use: false,
            camera: None,
        };
        HostPresence {
            name: name.to_owned(),
            advertise: format!("http://{name}:8000"),
            boards: boards.iter().map(board).collect(),
            last_seen: jiff::Timestamp::UNIX_EPOCH,
            online,
        }
    }

    #[test]
    fn the_lab_lists_hosts_by_name_numbers_boards_alike_and_keeps_the_first_of_an_id() {
        let env = crate::config::Env::from_pairs([("BCRYPT_ROUNDS", "4")]);
        let config =
            Config::from_toml("[[devices]]\nid = \"arm-1\"\nplugin = \"stk500v1\"\nport = \"/dev/null\"\n", &env)
                .unwrap();
        let hosts = [host("c-host", false, &["arm-9", "arm-2"]), host("a-host", true, &["arm-2", "arm-3"])];
        let lab = make_lab_devices(&hosts, &config, "b-host");
        let listed: Vec<(usize, &str, Option<&str>)> =
            lab.iter().map(|d| (d.number, d.id.as_str(), d.host.as_deref())).collect();
        assert_eq!(
            listed,
            [
                (0, "arm-2", Some("a-host")),
                (1, "arm-3", Some("a-host")),
                (2, "arm-1", Some("b-host")),
                (3, "arm-9", Some("c-host")),
            ],
            "c-host's arm-2 is a-host's, listed first"
        );
        assert!(lab[2].remote.is_none(), "this host's own board is served here");
        let offline = lab[3].remote.as_ref().unwrap();
        assert!(!offline.online && !offline.host_online, "an offline host's boards are offline");
        assert_eq!(offline.health, "unknown");
        assert!(lab[0].remote.as_ref().unwrap().online);
    }

    #[test]
    fn an_advertised_address_names_where_its_host_connects_from() {
        let cases = [
            ("http://bench-2.lab.example:8000", Some("bench-2.lab.example:8000")),
            ("http://bench-2.lab.example/", Some("bench-2.lab.example:80")),
            ("http://10.0.0.2:8000/rerod", Some("10.0.0.2:8000")),
            ("http://[fd00::2]:8000", Some("[fd00::2]:8000")),
            ("http://[fd00::2]", Some("[fd00::2]:80")),
            ("https://bench-2.lab.example", None),
            ("http://", None),
        ];
        for (advertise, want) in cases {
            assert_eq!(advertised_authority(advertise).as_deref(), want, "{advertise}");
        }
    }
}
