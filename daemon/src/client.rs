//! Who a request comes from, and how much one client may hold at once: the
//! client's address behind the lab's trusted reverse proxies, the key
//! per-address limits count it under, and counted shares of a limited
//! resource per key (connections per address, WebSockets per address and
//! per account).
//!
//! Architecture invariant: this module is pure bookkeeping. It knows no
//! HTTP types; the server hands it header values as text.

use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;
use std::net::{IpAddr, Ipv6Addr};
use std::str::FromStr;
use std::sync::{Arc, Mutex};

/// An address or a network: `192.0.2.7`, `10.0.0.0/8`, `fd00::/8`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, canonical(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                mask(u128::from(u32::from(net)), u128::from(u32::from(ip)), self.prefix, 32)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => mask(u128::from(net), u128::from(ip), self.prefix, 128),
            _ => false,
        }
    }
}

/// Whether `a` and `b`, numbers of `bits` bits, agree in their first `prefix` bits.
fn mask(a: u128, b: u128, prefix: u8, bits: u8) -> bool {
    let shift = u32::from(bits - prefix.min(bits));
    a.checked_shr(shift).unwrap_or(0) == b.checked_shr(shift).unwrap_or(0)
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(text: &str) -> Result<Cidr, String> {
        let (address, prefix) = match text.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text, None),
        };
        let network: IpAddr =
            address.parse().map_err(|_| format!("{text:?} is not an IP address or a network such as 10.0.0.0/8"))?;
        let bits = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => bits,
            Some(p) => match p.parse::<u8>() {
                Ok(n) if n <= bits && p.bytes().all(|b| b.is_ascii_digit()) => n,
                _ => return Err(format!("{text:?}: the prefix length must be 0 to {bits}")),
            },
        };
        Ok(Cidr { network: canonical(network), prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// An IPv4 address written as IPv6 (`::ffff:192.0.2.7`) is the IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The key per-address limits count `ip` under: the address itself for
/// IPv4, its /64 for IPv6, since one host is handed a whole /64 and can
/// speak from any address in it.
pub fn address_key(ip: IpAddr) -> IpAddr {
    match canonical(ip) {
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !((1u128 << 64) - 1))),
        v4 => v4,
    }
}

/// The client a request comes from. `peer` is the connection's address;
/// when it is a trusted proxy, the client is the right-most hop of the
/// `Forwarded` header (or, without one, `X-Forwarded-For`) that is not a
/// trusted proxy. Hops to its left are whatever the client wrote and are
/// never believed. A hop that does not parse stops the walk at the last
/// trusted address: a forged header never picks someone else's address.
pub fn client_address<'h>(
    peer: IpAddr,
    forwarded: impl IntoIterator<Item = &'h str>,
    x_forwarded_for: impl IntoIterator<Item = &'h str>,
    trusted: &[Cidr],
) -> IpAddr {
    let peer = canonical(peer);
    let is_trusted = |ip: IpAddr| trusted.iter().any(|cidr| cidr.contains(ip));
    if !is_trusted(peer) {
        return peer;
    }
    let mut hops: Vec<Option<IpAddr>> = forwarded.into_iter().flat_map(|v| v.split(',')).map(forwarded_for).collect();
    if hops.is_empty() {
        hops = x_forwarded_for.into_iter().flat_map(|v| v.split(',')).map(|hop| parse_hop(hop.trim())).collect();
    }
    let mut client = peer;
    for hop in hops.into_iter().rev() {
        match hop.map(canonical) {
            Some(ip) if is_trusted(ip) => client = ip,
            Some(ip) => return ip,
            None => return client,
        }
    }
    client
}

/// The `for=` of one `Forwarded` element (RFC 7239), as an address.
fn forwarded_for(element: &str) -> Option<IpAddr> {
    let value = element.split(';').find_map(|pair| {
        let (name, value) = pair.split_once('=')?;
        name.trim().eq_ignore_ascii_case("for").then_some(value.trim())
    })?;
    parse_hop(value.trim_matches('"'))
}

/// One hop as proxies write it: `192.0.2.7`, `192.0.2.7:4711`, `2001:db8::1`
/// or `[2001:db8::1]:4711`.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    if let Ok(ip) = hop.parse() {
        return Some(ip);
    }
    if let Some(rest) = hop.strip_prefix('[') {
        return rest.split_once(']').and_then(|(ip, _)| ip.parse().ok());
    }
    let (ip, port) = hop.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    ip.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4)
}

/// How many of a limited thing each key holds, for per-key caps.
#[derive(Debug)]
pub struct Shares<K> {
    held: Mutex<HashMap<K, usize>>,
}

impl<K> Default for Shares<K> {
    fn default() -> Shares<K> {
        Shares { held: Mutex::new(HashMap::new()) }
    }
}

/// One share held by `key`, given back when dropped.
#[derive(Debug)]
pub struct Share<K: Eq + Hash> {
    shares: Arc<Shares<K>>,
    key: K,
}

impl<K: Clone + Eq + Hash> Shares<K> {
    /// Takes one share for `key`, unless it already holds `max`.
    pub fn try_take(self: &Arc<Self>, key: K, max: usize) -> Option<Share<K>> {
        let mut held = self.held.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = held.entry(key.clone()).or_default();
        if *n >= max {
            if *n == 0 {
                held.remove(&key);
            }
            return None;
        }
        *n += 1;
        Some(Share { shares: Arc::clone(self), key })
    }

    /// How many shares `key` holds.
    #[cfg(test)]
    fn held(&self, key: &K) -> usize {
        self.held.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(key).copied().unwrap_or(0)
    }

    /// Keys holding at least one share (the map never keeps an idle key).
    #[cfg(test)]
    fn n_keys(&self) -> usize {
        self.held.lock().unwrap_or_else(std::sync::PoisonError::into_inner).len()
    }
}

impl<K: Eq + Hash> Share<K> {
    pub fn key(&self) -> &K {
        &self.key
    }
}

impl<K: Eq + Hash> Drop for Share<K> {
    fn drop(&mut self) {
        let mut held = self.shares.held.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(n) = held.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                held.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn trusted(list: &[&str]) -> Vec<Cidr> {
        list.iter().map(|c| c.parse().unwrap()).collect()
    }

    #[test]
    fn networks_parse_and_match() {
        let lan: Cidr = "10.1.0.0/16".parse().unwrap();
        assert!(lan.contains(ip("10.1.200.3")) && !lan.contains(ip("10.2.0.1")));
        assert!(lan.contains(ip("::ffff:10.1.0.9")), "an IPv4 address written as IPv6");
        let one: Cidr = "192.0.2.7".parse().unwrap();
        assert!(one.contains(ip("192.0.2.7")) && !one.contains(ip("192.0.2.8")));
        let v6: Cidr = "fd00::/8".parse().unwrap();
        assert!(v6.contains(ip("fd12::1")) && !v6.contains(ip("fe80::1")) && !v6.contains(ip("10.0.0.1")));
        assert!("0.0.0.0/0".parse::<Cidr>().unwrap().contains(ip("203.0.113.9")));
        for bad in ["", "10.0.0.0/33", "10.0.0.0/", "10.0.0.0/-1", "10.0.0.0/+8", "fd00::/129", "lab-proxy", "10.0.0/8"]
        {
            assert!(bad.parse::<Cidr>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_client_is_the_right_most_untrusted_hop() {
        let proxies = trusted(&["10.0.0.0/8"]);
        let none: [&str; 0] = [];
        // Not from a proxy: headers are not believed.
        assert_eq!(client_address(ip("203.0.113.5"), none, ["198.51.100.1"], &proxies), ip("203.0.113.5"));
        // From the proxy: the hop it appended, not what the client forged before it.
        let xff = ["198.51.100.1, 203.0.113.5"];
        assert_eq!(client_address(ip("10.0.0.2"), none, xff, &proxies), ip("203.0.113.5"));
        // Two proxies in a row.
        let xff = ["6.6.6.6, 203.0.113.5, 10.0.0.3"];
        assert_eq!(client_address(ip("10.0.0.2"), none, xff, &proxies), ip("203.0.113.5"));
        // Forwarded wins over X-Forwarded-For; ports and brackets are taken off.
        let forwarded = [r#"for=6.6.6.6, for="[2001:db8::1]:4711";proto=https"#];
        assert_eq!(client_address(ip("10.0.0.2"), forwarded, ["6.6.6.6"], &proxies), ip("2001:db8::1"));
        assert_eq!(client_address(ip("10.0.0.2"), ["for=203.0.113.5:8080"], none, &proxies), ip("203.0.113.5"));
        // Several header lines read as one list, in order.
        let xff = ["198.51.100.1", "203.0.113.5"];
        assert_eq!(client_address(ip("10.0.0.2"), none, xff, &proxies), ip("203.0.113.5"));
        // Garbage, or no header at all: the proxy itself, never a forged address.
        assert_eq!(client_address(ip("10.0.0.2"), none, ["6.6.6.6, unknown"], &proxies), ip("10.0.0.2"));
        assert_eq!(client_address(ip("10.0.0.2"), ["for=_hidden"], none, &proxies), ip("10.0.0.2"));
        assert_eq!(client_address(ip("10.0.0.2"), none, none, &proxies), ip("10.0.0.2"));
        // Without trusted proxies nothing is believed.
        assert_eq!(client_address(ip("10.0.0.2"), none, ["203.0.113.5"], &[]), ip("10.0.0.2"));
    }

    #[test]
    fn ipv6_clients_are_counted_by_their_64() {
        assert_eq!(address_key(ip("2001:db8:1:2:aaaa::1")), ip("2001:db8:1:2::"));
        assert_eq!(address_key(ip("2001:db8:1:2:bbbb::9")), ip("2001:db8:1:2::"));
        assert_eq!(address_key(ip("::ffff:192.0.2.7")), ip("192.0.2.7"));
        assert_eq!(address_key(ip("192.0.2.7")), ip("192.0.2.7"));
    }

    #[test]
    fn shares_are_capped_per_key_and_given_back() {
        let shares = Arc::new(Shares::default());
        let a: Vec<_> = (0..3).filter_map(|_| shares.try_take("a", 2)).collect();
        assert_eq!(a.len(), 2, "a third share is refused");
        assert!(shares.try_take("b", 2).is_some(), "another key has its own");
        assert!(shares.try_take("z", 0).is_none());
        assert_eq!((shares.held(&"a"), shares.n_keys()), (2, 1));
        drop(a);
        assert_eq!((shares.held(&"a"), shares.n_keys()), (0, 0), "an idle key is forgotten");
    }
}
