//! Locating SIP servers (RFC 3263): NAPTR, then SRV, then A/AAAA.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Mutex;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sip_core::{Host, SipScheme, SipUri};

use crate::transport::TransportKind;

/// A boxed future, so [`Resolver`] can be used as a trait object.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The DNS lookups RFC 3263 needs. "No such name" and "no records of that
/// type" are an empty list, not an error.
///
/// [`HickoryResolver`](crate::HickoryResolver) asks the system's DNS
/// servers; [`StaticResolver`] answers from a map, for tests.
pub trait Resolver: Send + Sync {
    /// NAPTR records of a domain.
    fn naptr<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Vec<NaptrRecord>, ResolveError>>;
    /// SRV records of a name such as `_sips._tcp.example.com`.
    fn srv<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Vec<SrvRecord>, ResolveError>>;
    /// A and AAAA records of a host.
    fn ip<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Vec<IpAddr>, ResolveError>>;
}

/// A NAPTR record (RFC 3403), as far as SIP uses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NaptrRecord {
    /// Lower first; only the lowest order that offers a usable service counts.
    pub order: u16,
    /// Lower first, within one order.
    pub preference: u16,
    /// `S` for records that lead to SRV.
    pub flags: String,
    /// `SIP+D2U`, `SIP+D2T`, `SIPS+D2T`, `SIP+D2W`, `SIPS+D2W`.
    pub services: String,
    /// The SRV name to look up next.
    pub replacement: String,
}

/// An SRV record (RFC 2782).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SrvRecord {
    /// Lower first.
    pub priority: u16,
    /// Share of the load within one priority.
    pub weight: u16,
    /// The port.
    pub port: u16,
    /// The host; `.` means the service is not offered.
    pub target: String,
}

/// One place to try, in the order returned by [`ServerLocator::locate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The transport.
    pub kind: TransportKind,
    /// The address and port.
    pub addr: SocketAddr,
    /// For TLS and WSS, the name the certificate must be issued for: the
    /// domain of the URI, not the SRV target (RFC 5922 §4), or the IP
    /// address of a numeric host.
    pub server_name: Option<String>,
}

/// Why no target could be found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ResolveError {
    /// The URI's `transport` parameter names a transport this layer lacks,
    /// or one the scheme forbids (`sips` over UDP).
    #[error("unsupported transport {transport:?} for a {scheme} URI")]
    UnsupportedTransport {
        /// The parameter's value.
        transport: String,
        /// `sip` or `sips`.
        scheme: &'static str,
    },
    /// DNS had no usable record for the domain.
    #[error("no server found")]
    NotFound,
    /// A DNS query failed (not "no records", which is an empty answer).
    #[error("DNS lookup failed: {reason}")]
    Lookup {
        /// What the resolver said.
        reason: String,
    },
}

/// Turns a SIP URI into an ordered list of [`Target`]s (RFC 3263 §4).
///
/// ```
/// use sip_core::Uri;
/// use sip_tokio::{ServerLocator, SrvRecord, StaticResolver, TransportKind};
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let dns = StaticResolver::new()
///     .with_srv("_sips._tcp.example.com", [SrvRecord {
///         priority: 0, weight: 0, port: 5061, target: "pbx.example.com".into(),
///     }])
///     .with_ip("pbx.example.com", ["192.0.2.10".parse().unwrap()]);
/// let uri = Uri::parse("sips:alice@example.com").unwrap();
/// let targets = ServerLocator::new(dns).locate(uri.as_sip().unwrap()).await.unwrap();
/// assert_eq!(targets[0].kind, TransportKind::Tls);
/// assert_eq!(targets[0].addr, "192.0.2.10:5061".parse().unwrap());
/// assert_eq!(targets[0].server_name.as_deref(), Some("example.com"));
/// # });
/// ```
pub struct ServerLocator<R> {
    resolver: R,
    transports: Vec<TransportKind>,
    rng: Mutex<StdRng>,
}

impl<R: Resolver> ServerLocator<R> {
    /// A locator that may use UDP, TCP and TLS, preferring TLS, then TCP,
    /// then UDP when DNS leaves the choice (no NAPTR records).
    pub fn new(resolver: R) -> Self {
        ServerLocator {
            resolver,
            transports: vec![TransportKind::Tls, TransportKind::Tcp, TransportKind::Udp],
            rng: Mutex::new(StdRng::from_rng(&mut rand::rng())),
        }
    }

    /// The transports this client supports, most preferred first. WS and
    /// WSS are only chosen through NAPTR (`SIP+D2W`, `SIPS+D2W`) or an
    /// explicit `transport=ws`.
    pub fn with_transports(mut self, transports: impl IntoIterator<Item = TransportKind>) -> Self {
        self.transports = transports.into_iter().collect();
        self
    }

    /// Seeds the random choice among SRV records of equal priority, for
    /// reproducible tests.
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.rng = Mutex::new(StdRng::seed_from_u64(seed));
        self
    }

    /// The resolver.
    pub fn resolver(&self) -> &R {
        &self.resolver
    }

    /// The targets for `uri`, best first; an error if there is none.
    ///
    /// - `maddr`, when present, replaces the host.
    /// - Transport: the `transport` parameter (`sips` turns TCP into TLS);
    ///   otherwise, for a numeric host or an explicit port, UDP for `sip`
    ///   and TLS for `sips`; otherwise NAPTR, and without usable NAPTR
    ///   records SRV queries for each supported transport.
    /// - Address: a numeric host as it is; an explicit port skips SRV and
    ///   looks up A/AAAA; otherwise SRV records sorted by priority and
    ///   shuffled by weight (RFC 2782), and without SRV records A/AAAA at
    ///   the transport's default port.
    pub async fn locate(&self, uri: &SipUri<'_>) -> Result<Vec<Target>, ResolveError> {
        let secure = uri.scheme == SipScheme::Sips;
        let scheme = uri.scheme.as_str();
        let transport = match uri.transport() {
            Some(param) => Some(transport_from_param(param, secure).ok_or_else(|| {
                ResolveError::UnsupportedTransport {
                    transport: param.to_owned(),
                    scheme,
                }
            })?),
            None => None,
        };
        let host = match uri.maddr() {
            Some(maddr) => parse_host(maddr),
            None => uri.host,
        };
        let server_name = |kind: TransportKind| {
            kind.is_secure().then(|| match uri.host {
                Host::Domain(domain) => trim_dot(domain).to_owned(),
                Host::Ipv4(ip) => ip.to_string(),
                Host::Ipv6(ip) => ip.to_string(),
            })
        };
        let default_kind = self.fallback_kind(secure);

        // RFC 3263 §4.1 and §4.2: a numeric host needs no DNS at all.
        let domain = match host {
            Host::Ipv4(ip) => {
                return Ok(numeric(
                    ip.into(),
                    uri.port,
                    transport,
                    default_kind,
                    server_name,
                ));
            }
            Host::Ipv6(ip) => {
                return Ok(numeric(
                    ip.into(),
                    uri.port,
                    transport,
                    default_kind,
                    server_name,
                ));
            }
            Host::Domain(domain) => trim_dot(domain),
        };

        // An explicit port: A/AAAA only.
        if let Some(port) = uri.port {
            let kind = transport.unwrap_or(default_kind);
            let targets = self
                .addresses(domain, port)
                .await?
                .into_iter()
                .map(|addr| Target {
                    kind,
                    addr,
                    server_name: server_name(kind),
                })
                .collect();
            return non_empty(targets);
        }

        // A failed query loses what it would have found, not the answers
        // of the others (RFC 2782: one bad element does not drop the
        // rest); when nothing is found, the first failure is the error.
        let mut failure = None;
        // Whether any SRV query answered with records: A/AAAA at the
        // default port only when none did (RFC 3263 §4.2).
        let mut srv_found = false;

        // An explicit transport: SRV for that transport, then A/AAAA.
        if let Some(kind) = transport {
            let mut targets = Vec::new();
            if let Some(service) = srv_prefix(kind) {
                let name = format!("{service}.{domain}");
                targets = self
                    .srv_lookup(&name, kind, &server_name, &mut failure, &mut srv_found)
                    .await;
            }
            if !srv_found {
                targets = keep(
                    self.default_port_targets(domain, kind, &server_name).await,
                    &mut failure,
                );
            }
            return found(targets, failure);
        }

        // NAPTR.
        let mut naptr: Vec<(NaptrRecord, TransportKind)> =
            keep(self.resolver.naptr(domain).await, &mut failure)
                .into_iter()
                .filter(|r| r.flags.eq_ignore_ascii_case("s"))
                .filter_map(|r| {
                    let kind = transport_from_service(&r.services, secure)?;
                    self.transports.contains(&kind).then_some((r, kind))
                })
                .collect();
        naptr.sort_by_key(|(r, _)| (r.order, r.preference));
        if let Some(first_order) = naptr.first().map(|(r, _)| r.order) {
            let mut targets = Vec::new();
            for (record, kind) in naptr.iter().filter(|(r, _)| r.order == first_order) {
                let name = trim_dot(&record.replacement);
                targets.extend(
                    self.srv_lookup(name, *kind, &server_name, &mut failure, &mut srv_found)
                        .await,
                );
            }
            if !targets.is_empty() {
                return Ok(targets);
            }
        }

        // No usable NAPTR: SRV for each supported transport.
        let mut targets = Vec::new();
        for &kind in &self.transports {
            let Some(service) = srv_prefix(kind) else {
                continue;
            };
            if secure && !kind.is_secure() {
                continue;
            }
            let name = format!("{service}.{domain}");
            targets.extend(
                self.srv_lookup(&name, kind, &server_name, &mut failure, &mut srv_found)
                    .await,
            );
        }
        if !targets.is_empty() || srv_found {
            return found(targets, failure);
        }

        // No SRV records at all: A/AAAA at the default port of UDP (sip;
        // TCP when UDP is not supported) or TLS (sips).
        let targets = keep(
            self.default_port_targets(domain, default_kind, &server_name)
                .await,
            &mut failure,
        );
        found(targets, failure)
    }

    /// The transport for a URI that DNS leaves open (RFC 3263 §4.1): UDP
    /// for `sip`, or another one this client supports when it lacks UDP
    /// ("another transport, such as TCP, MAY be used"); TLS for `sips`.
    fn fallback_kind(&self, secure: bool) -> TransportKind {
        let wanted: &[TransportKind] = if secure {
            &[TransportKind::Tls]
        } else {
            &[TransportKind::Udp, TransportKind::Tcp, TransportKind::Tls]
        };
        wanted
            .iter()
            .copied()
            .find(|k| self.transports.contains(k))
            .unwrap_or(wanted[0])
    }

    async fn addresses(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, ResolveError> {
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(vec![SocketAddr::new(ip, port)]);
        }
        Ok(self
            .resolver
            .ip(host)
            .await?
            .into_iter()
            .map(|ip| SocketAddr::new(ip, port))
            .collect())
    }

    async fn default_port_targets(
        &self,
        domain: &str,
        kind: TransportKind,
        server_name: &impl Fn(TransportKind) -> Option<String>,
    ) -> Result<Vec<Target>, ResolveError> {
        Ok(self
            .addresses(domain, kind.default_port())
            .await?
            .into_iter()
            .map(|addr| Target {
                kind,
                addr,
                server_name: server_name(kind),
            })
            .collect())
    }

    /// The SRV query for `name` and its targets' addresses; notes whether
    /// it found records and the first failure.
    async fn srv_lookup(
        &self,
        name: &str,
        kind: TransportKind,
        server_name: &impl Fn(TransportKind) -> Option<String>,
        failure: &mut Option<ResolveError>,
        srv_found: &mut bool,
    ) -> Vec<Target> {
        let records = keep(self.resolver.srv(name).await, failure);
        *srv_found |= !records.is_empty();
        self.srv_targets(records, kind, server_name, failure).await
    }

    /// The addresses of SRV records in RFC 2782 order. A target whose
    /// address lookup fails is skipped (the failure noted); a lone "."
    /// target means the service is not offered and gives none.
    async fn srv_targets(
        &self,
        records: Vec<SrvRecord>,
        kind: TransportKind,
        server_name: &impl Fn(TransportKind) -> Option<String>,
        failure: &mut Option<ResolveError>,
    ) -> Vec<Target> {
        let ordered = {
            let mut rng = self
                .rng
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            order_srv(records, |total| rng.random_range(0..=total))
        };
        let mut targets = Vec::new();
        for record in ordered {
            let target = trim_dot(&record.target);
            if target.is_empty() {
                continue; // "." : not offered here
            }
            for addr in keep(self.addresses(target, record.port).await, failure) {
                targets.push(Target {
                    kind,
                    addr,
                    server_name: server_name(kind),
                });
            }
        }
        targets
    }
}

impl<R> fmt::Debug for ServerLocator<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerLocator")
            .field("transports", &self.transports)
            .finish_non_exhaustive()
    }
}

/// Orders SRV records as RFC 2782 says: by priority, lowest first; within a
/// priority by weighted random choice, where `random(total)` returns a
/// number in `0..=total` and weight-0 records come first in the running sum
/// (so they are picked only when the draw is 0).
pub fn order_srv(
    mut records: Vec<SrvRecord>,
    mut random: impl FnMut(u32) -> u32,
) -> Vec<SrvRecord> {
    records.sort_by_key(|r| (r.priority, r.weight != 0));
    let mut ordered = Vec::with_capacity(records.len());
    while !records.is_empty() {
        let priority = records[0].priority;
        let same = records
            .iter()
            .take_while(|r| r.priority == priority)
            .count();
        let mut group: Vec<SrvRecord> = records.drain(..same).collect();
        while !group.is_empty() {
            let total: u32 = group.iter().map(|r| u32::from(r.weight)).sum();
            let draw = random(total).min(total);
            let mut sum = 0;
            let mut chosen = group.len() - 1;
            for (i, r) in group.iter().enumerate() {
                sum += u32::from(r.weight);
                if sum >= draw {
                    chosen = i;
                    break;
                }
            }
            ordered.push(group.remove(chosen));
        }
    }
    ordered
}

/// A [`Resolver`] that answers from fixed records, for tests. Names are
/// matched without case and without a trailing dot. Every query is recorded.
#[derive(Debug, Default)]
pub struct StaticResolver {
    naptr: HashMap<String, Vec<NaptrRecord>>,
    srv: HashMap<String, Vec<SrvRecord>>,
    ip: HashMap<String, Vec<IpAddr>>,
    failing: HashSet<String>,
    queries: Mutex<Vec<String>>,
}

impl StaticResolver {
    /// No records at all.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds NAPTR records for `name`.
    pub fn with_naptr(
        mut self,
        name: &str,
        records: impl IntoIterator<Item = NaptrRecord>,
    ) -> Self {
        self.naptr.entry(key(name)).or_default().extend(records);
        self
    }

    /// Adds SRV records for `name`.
    pub fn with_srv(mut self, name: &str, records: impl IntoIterator<Item = SrvRecord>) -> Self {
        self.srv.entry(key(name)).or_default().extend(records);
        self
    }

    /// Adds A/AAAA records for `name`.
    pub fn with_ip(mut self, name: &str, addrs: impl IntoIterator<Item = IpAddr>) -> Self {
        self.ip.entry(key(name)).or_default().extend(addrs);
        self
    }

    /// Makes a query fail as a broken server would (SERVFAIL, time-out):
    /// `query` as in [`queries`](Self::queries), e.g. `NAPTR example.com`.
    pub fn with_failure(mut self, query: &str) -> Self {
        let (kind, name) = query.split_once(' ').unwrap_or(("", query));
        self.failing.insert(format!("{kind} {}", key(name)));
        self
    }

    /// The queries so far, as `TYPE name`, e.g. `SRV _sip._udp.example.com`.
    pub fn queries(&self) -> Vec<String> {
        self.queries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn record(&self, kind: &str, name: &str) -> String {
        let name = key(name);
        self.queries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(format!("{kind} {name}"));
        name
    }

    fn answer<T: Clone + Send + 'static>(
        &self,
        kind: &str,
        name: &str,
        records: &HashMap<String, Vec<T>>,
    ) -> BoxFuture<'static, Result<Vec<T>, ResolveError>> {
        let name = self.record(kind, name);
        let query = format!("{kind} {name}");
        let answer = if self.failing.contains(&query) {
            Err(ResolveError::Lookup {
                reason: format!("{query}: server failure"),
            })
        } else {
            Ok(records.get(&name).cloned().unwrap_or_default())
        };
        Box::pin(async move { answer })
    }
}

impl Resolver for StaticResolver {
    fn naptr<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Vec<NaptrRecord>, ResolveError>> {
        self.answer("NAPTR", name, &self.naptr)
    }

    fn srv<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Vec<SrvRecord>, ResolveError>> {
        self.answer("SRV", name, &self.srv)
    }

    fn ip<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Vec<IpAddr>, ResolveError>> {
        self.answer("A/AAAA", name, &self.ip)
    }
}

impl<T: Resolver + ?Sized> Resolver for &T {
    fn naptr<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Vec<NaptrRecord>, ResolveError>> {
        (**self).naptr(name)
    }

    fn srv<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Vec<SrvRecord>, ResolveError>> {
        (**self).srv(name)
    }

    fn ip<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Vec<IpAddr>, ResolveError>> {
        (**self).ip(name)
    }
}

impl<T: Resolver + ?Sized> Resolver for std::sync::Arc<T> {
    fn naptr<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Vec<NaptrRecord>, ResolveError>> {
        (**self).naptr(name)
    }

    fn srv<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Vec<SrvRecord>, ResolveError>> {
        (**self).srv(name)
    }

    fn ip<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Vec<IpAddr>, ResolveError>> {
        (**self).ip(name)
    }
}

fn key(name: &str) -> String {
    trim_dot(name).to_ascii_lowercase()
}

fn trim_dot(name: &str) -> &str {
    name.strip_suffix('.').unwrap_or(name)
}

fn parse_host(text: &str) -> Host<'_> {
    let bare = text
        .strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .unwrap_or(text);
    match bare.parse::<IpAddr>() {
        Ok(IpAddr::V4(ip)) => Host::Ipv4(ip),
        Ok(IpAddr::V6(ip)) => Host::Ipv6(ip),
        Err(_) => Host::Domain(text),
    }
}

fn numeric(
    ip: IpAddr,
    port: Option<u16>,
    transport: Option<TransportKind>,
    default_kind: TransportKind,
    server_name: impl Fn(TransportKind) -> Option<String>,
) -> Vec<Target> {
    let kind = transport.unwrap_or(default_kind);
    vec![Target {
        kind,
        addr: SocketAddr::new(ip, port.unwrap_or(kind.default_port())),
        server_name: server_name(kind),
    }]
}

fn non_empty(targets: Vec<Target>) -> Result<Vec<Target>, ResolveError> {
    found(targets, None)
}

/// The targets, or when there are none the first failed lookup (else
/// [`ResolveError::NotFound`]).
fn found(targets: Vec<Target>, failure: Option<ResolveError>) -> Result<Vec<Target>, ResolveError> {
    if targets.is_empty() {
        Err(failure.unwrap_or(ResolveError::NotFound))
    } else {
        Ok(targets)
    }
}

/// A lookup's answer, or nothing with the first failure noted.
fn keep<T: Default>(result: Result<T, ResolveError>, failure: &mut Option<ResolveError>) -> T {
    result.unwrap_or_else(|e| {
        failure.get_or_insert(e);
        T::default()
    })
}

/// The transport a `transport` URI parameter asks for; `sips` secures TCP
/// and WS and refuses UDP.
fn transport_from_param(param: &str, secure: bool) -> Option<TransportKind> {
    let kind = match param.to_ascii_lowercase().as_str() {
        "udp" => TransportKind::Udp,
        "tcp" => TransportKind::Tcp,
        "tls" => TransportKind::Tls,
        "ws" => TransportKind::Ws,
        "wss" => TransportKind::Wss,
        _ => return None,
    };
    if !secure {
        return Some(kind);
    }
    match kind {
        TransportKind::Udp => None,
        TransportKind::Tcp | TransportKind::Tls => Some(TransportKind::Tls),
        TransportKind::Ws | TransportKind::Wss => Some(TransportKind::Wss),
    }
}

/// The transport of a NAPTR service field; for a `sips` URI only the
/// `SIPS+` services count.
fn transport_from_service(services: &str, secure: bool) -> Option<TransportKind> {
    let kind = match services.to_ascii_uppercase().as_str() {
        "SIP+D2U" => TransportKind::Udp,
        "SIP+D2T" => TransportKind::Tcp,
        "SIPS+D2T" => TransportKind::Tls,
        "SIP+D2W" => TransportKind::Ws,
        "SIPS+D2W" => TransportKind::Wss,
        _ => return None,
    };
    (!secure || kind.is_secure()).then_some(kind)
}

/// The SRV service and protocol labels of a transport (RFC 3263 §4.1).
fn srv_prefix(kind: TransportKind) -> Option<&'static str> {
    match kind {
        TransportKind::Udp => Some("_sip._udp"),
        TransportKind::Tcp => Some("_sip._tcp"),
        TransportKind::Tls => Some("_sips._tcp"),
        TransportKind::Ws | TransportKind::Wss => None,
    }
}

#[cfg(test)]
mod tests {
    use sip_core::Uri;

    use super::*;

    fn srv(priority: u16, weight: u16, port: u16, target: &str) -> SrvRecord {
        SrvRecord {
            priority,
            weight,
            port,
            target: target.to_owned(),
        }
    }

    fn naptr(order: u16, preference: u16, services: &str, replacement: &str) -> NaptrRecord {
        NaptrRecord {
            order,
            preference,
            flags: "s".to_owned(),
            services: services.to_owned(),
            replacement: replacement.to_owned(),
        }
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    async fn locate(dns: &StaticResolver, uri: &str) -> Result<Vec<Target>, ResolveError> {
        let uri = Uri::parse(uri).unwrap();
        ServerLocator::new(dns)
            .with_seed(7)
            .locate(uri.as_sip().unwrap())
            .await
    }

    fn summary(targets: &[Target]) -> Vec<String> {
        targets
            .iter()
            .map(|t| format!("{} {}", t.kind, t.addr))
            .collect()
    }

    /// A well populated zone, so tests show which records were *not* used.
    fn example_zone() -> StaticResolver {
        StaticResolver::new()
            .with_naptr(
                "example.com",
                [
                    naptr(50, 50, "SIP+D2U", "_sip._udp.example.com."),
                    naptr(50, 10, "SIP+D2T", "_sip._tcp.example.com."),
                    naptr(90, 50, "SIPS+D2T", "_sips._tcp.example.com."),
                ],
            )
            .with_srv(
                "_sip._udp.example.com",
                [srv(0, 0, 5060, "udp.example.com.")],
            )
            .with_srv(
                "_sip._tcp.example.com",
                [srv(0, 0, 5070, "tcp.example.com.")],
            )
            .with_srv(
                "_sips._tcp.example.com",
                [srv(0, 0, 5071, "tls.example.com.")],
            )
            .with_ip("example.com", [ip("192.0.2.1")])
            .with_ip("udp.example.com", [ip("192.0.2.2")])
            .with_ip("tcp.example.com", [ip("192.0.2.3")])
            .with_ip("tls.example.com", [ip("192.0.2.4"), ip("2001:db8::4")])
    }

    #[test]
    fn locate_future_can_move_between_threads() {
        fn assert_send<T: Send>(_: &T) {}
        let dns = StaticResolver::new();
        let locator = ServerLocator::new(&dns);
        let uri = Uri::parse("sip:example.com").unwrap();
        assert_send(&locator.locate(uri.as_sip().unwrap()));
        let shared: std::sync::Arc<dyn Resolver> = std::sync::Arc::new(StaticResolver::new());
        assert_send(&ServerLocator::new(shared));
    }

    #[tokio::test]
    async fn rfc3263_4_numeric_host_needs_no_dns() {
        let dns = StaticResolver::new();
        let t = locate(&dns, "sip:alice@192.0.2.9").await.unwrap();
        assert_eq!(summary(&t), ["UDP 192.0.2.9:5060"]);
        let t = locate(&dns, "sips:alice@192.0.2.9").await.unwrap();
        assert_eq!(summary(&t), ["TLS 192.0.2.9:5061"]);
        assert_eq!(t[0].server_name.as_deref(), Some("192.0.2.9"));
        let t = locate(&dns, "sip:[2001:db8::9]:5080;transport=tcp")
            .await
            .unwrap();
        assert_eq!(summary(&t), ["TCP [2001:db8::9]:5080"]);
        assert!(dns.queries().is_empty());
    }

    #[tokio::test]
    async fn rfc3263_4_2_explicit_port_skips_naptr_and_srv() {
        let dns = example_zone();
        let t = locate(&dns, "sip:example.com:5080").await.unwrap();
        assert_eq!(summary(&t), ["UDP 192.0.2.1:5080"]);
        assert_eq!(dns.queries(), ["A/AAAA example.com"]);
        let t = locate(&dns, "sips:example.com:5081").await.unwrap();
        assert_eq!(summary(&t), ["TLS 192.0.2.1:5081"]);
    }

    #[tokio::test]
    async fn rfc3263_4_1_transport_param_selects_that_srv() {
        let dns = example_zone();
        let t = locate(&dns, "sip:example.com;transport=tcp").await.unwrap();
        assert_eq!(summary(&t), ["TCP 192.0.2.3:5070"]);
        assert_eq!(
            dns.queries(),
            ["SRV _sip._tcp.example.com", "A/AAAA tcp.example.com"]
        );
    }

    #[tokio::test]
    async fn rfc3263_4_1_sips_with_transport_tcp_means_tls() {
        let dns = example_zone();
        let t = locate(&dns, "sips:example.com;transport=tcp")
            .await
            .unwrap();
        assert_eq!(
            summary(&t),
            ["TLS 192.0.2.4:5071", "TLS [2001:db8::4]:5071"]
        );
        // The certificate must name the URI's domain, not the SRV target.
        assert!(
            t.iter()
                .all(|t| t.server_name.as_deref() == Some("example.com"))
        );
    }

    #[tokio::test]
    async fn rfc3263_4_1_sips_over_udp_is_refused() {
        let dns = example_zone();
        let err = locate(&dns, "sips:example.com;transport=udp")
            .await
            .unwrap_err();
        assert!(matches!(err, ResolveError::UnsupportedTransport { .. }));
        let err = locate(&dns, "sip:example.com;transport=sctp")
            .await
            .unwrap_err();
        assert!(matches!(err, ResolveError::UnsupportedTransport { .. }));
    }

    #[tokio::test]
    async fn rfc3263_4_1_naptr_lowest_order_then_preference() {
        let dns = example_zone();
        let t = locate(&dns, "sip:example.com").await.unwrap();
        // Order 50 wins over 90; within it TCP (preference 10) before UDP.
        assert_eq!(summary(&t), ["TCP 192.0.2.3:5070", "UDP 192.0.2.2:5060"]);
    }

    #[tokio::test]
    async fn rfc3263_4_1_sips_uri_uses_only_sips_naptr_services() {
        let dns = example_zone();
        let t = locate(&dns, "sips:example.com").await.unwrap();
        assert_eq!(
            summary(&t),
            ["TLS 192.0.2.4:5071", "TLS [2001:db8::4]:5071"]
        );
    }

    #[tokio::test]
    async fn rfc3263_4_1_naptr_services_the_client_lacks_are_skipped() {
        let dns = example_zone();
        let uri = Uri::parse("sip:example.com").unwrap();
        let t = ServerLocator::new(&dns)
            .with_transports([TransportKind::Udp])
            .locate(uri.as_sip().unwrap())
            .await
            .unwrap();
        assert_eq!(summary(&t), ["UDP 192.0.2.2:5060"]);
    }

    #[tokio::test]
    async fn rfc3263_4_1_without_naptr_srv_per_supported_transport() {
        let dns = StaticResolver::new()
            .with_srv(
                "_sip._udp.example.org",
                [srv(0, 0, 5060, "sip.example.org")],
            )
            .with_ip("sip.example.org", [ip("198.51.100.1")]);
        let t = locate(&dns, "sip:bob@example.org").await.unwrap();
        assert_eq!(summary(&t), ["UDP 198.51.100.1:5060"]);
        assert_eq!(
            dns.queries(),
            [
                "NAPTR example.org",
                "SRV _sips._tcp.example.org",
                "SRV _sip._tcp.example.org",
                "SRV _sip._udp.example.org",
                "A/AAAA sip.example.org",
            ]
        );
    }

    #[tokio::test]
    async fn rfc3263_4_2_without_srv_a_records_at_default_port() {
        let dns = StaticResolver::new().with_ip("example.net", [ip("203.0.113.5")]);
        let t = locate(&dns, "sip:example.net").await.unwrap();
        assert_eq!(summary(&t), ["UDP 203.0.113.5:5060"]);
        let t = locate(&dns, "sips:example.net").await.unwrap();
        assert_eq!(summary(&t), ["TLS 203.0.113.5:5061"]);
        let t = locate(&dns, "sip:example.net;transport=tcp").await.unwrap();
        assert_eq!(summary(&t), ["TCP 203.0.113.5:5060"]);
    }

    #[tokio::test]
    async fn rfc3263_unknown_domain_is_not_found() {
        let dns = StaticResolver::new();
        assert_eq!(
            locate(&dns, "sip:nowhere.invalid").await.unwrap_err(),
            ResolveError::NotFound
        );
    }

    #[tokio::test]
    async fn rfc3263_maddr_replaces_the_host() {
        let dns = example_zone();
        let t = locate(&dns, "sip:alice@example.com;maddr=192.0.2.77")
            .await
            .unwrap();
        assert_eq!(summary(&t), ["UDP 192.0.2.77:5060"]);
        assert!(dns.queries().is_empty());
    }

    /// RFC 2782: a lone "." target means the service is decidedly not
    /// available; RFC 3263 §4.2 looks up A/AAAA only when there are no SRV
    /// records at all.
    #[tokio::test]
    async fn rfc2782_srv_target_dot_means_not_offered() {
        let dns = StaticResolver::new()
            .with_srv("_sip._udp.example.org", [srv(0, 0, 5060, ".")])
            .with_ip("example.org", [ip("198.51.100.9")]);
        assert_eq!(
            locate(&dns, "sip:example.org;transport=udp")
                .await
                .unwrap_err(),
            ResolveError::NotFound
        );
        assert!(!dns.queries().iter().any(|q| q.starts_with("A/AAAA")));
    }

    /// A failed NAPTR query (a home router's forwarder answering SERVFAIL)
    /// does not stop the SRV lookups; a failed address lookup for one SRV
    /// target keeps the others; when nothing is found the failure is the
    /// error, not "no server".
    #[tokio::test]
    async fn rfc2782_a_failed_query_loses_only_its_own_answer() {
        let dns = StaticResolver::new()
            .with_failure("NAPTR example.com")
            .with_srv(
                "_sip._udp.example.com",
                [
                    srv(0, 0, 5060, "broken.example.com"),
                    srv(1, 0, 5060, "ok.example.com"),
                ],
            )
            .with_failure("A/AAAA broken.example.com")
            .with_ip("ok.example.com", [ip("192.0.2.30")]);
        let t = locate(&dns, "sip:example.com").await.unwrap();
        assert_eq!(summary(&t), ["UDP 192.0.2.30:5060"]);

        let dead = StaticResolver::new().with_failure("NAPTR example.com");
        assert!(matches!(
            locate(&dead, "sip:example.com").await.unwrap_err(),
            ResolveError::Lookup { .. }
        ));
    }

    /// RFC 3263 §4.1: with no NAPTR or SRV records a client without UDP
    /// uses TCP at the default port instead of a target it cannot use.
    #[tokio::test]
    async fn rfc3263_4_1_a_client_without_udp_falls_back_to_tcp() {
        let dns = StaticResolver::new().with_ip("proxy.example.com", [ip("192.0.2.40")]);
        let uri = Uri::parse("sip:proxy.example.com").unwrap();
        let t = ServerLocator::new(&dns)
            .with_transports([TransportKind::Tls, TransportKind::Tcp])
            .locate(uri.as_sip().unwrap())
            .await
            .unwrap();
        assert_eq!(summary(&t), ["TCP 192.0.2.40:5060"]);
    }

    #[tokio::test]
    async fn rfc2782_srv_priority_orders_targets() {
        let dns = StaticResolver::new()
            .with_srv(
                "_sip._udp.example.org",
                [
                    srv(20, 0, 5060, "c.example.org"),
                    srv(10, 0, 5060, "a.example.org"),
                    srv(15, 0, 5060, "b.example.org"),
                ],
            )
            .with_ip("a.example.org", [ip("198.51.100.1")])
            .with_ip("b.example.org", [ip("198.51.100.2")])
            .with_ip("c.example.org", [ip("198.51.100.3")]);
        let t = locate(&dns, "sip:example.org;transport=udp").await.unwrap();
        assert_eq!(
            summary(&t),
            [
                "UDP 198.51.100.1:5060",
                "UDP 198.51.100.2:5060",
                "UDP 198.51.100.3:5060"
            ]
        );
    }

    fn targets(records: &[SrvRecord]) -> Vec<&str> {
        records.iter().map(|r| r.target.as_str()).collect()
    }

    #[test]
    fn rfc2782_weight_selection_follows_running_sum() {
        let records = vec![
            srv(1, 60, 5060, "heavy"),
            srv(1, 0, 5060, "zero"),
            srv(1, 30, 5060, "light"),
            srv(0, 5, 5060, "first"),
        ];
        // Draw 0 picks the weight-0 record, which sorts first in the sum.
        let ordered = order_srv(records.clone(), |_| 0);
        assert_eq!(targets(&ordered), ["first", "zero", "heavy", "light"]);
        // Draw `total` picks the last record of the running sum each time.
        let ordered = order_srv(records.clone(), |total| total);
        assert_eq!(targets(&ordered), ["first", "light", "heavy", "zero"]);
        // Draw 61 falls past heavy (60) into light (60+30).
        let mut draws = [5, 61, 0, 0].into_iter();
        let ordered = order_srv(records, |_| draws.next().unwrap());
        assert_eq!(targets(&ordered), ["first", "light", "zero", "heavy"]);
    }

    #[test]
    fn rfc2782_weights_share_the_load() {
        let records = vec![srv(0, 90, 1, "ninety"), srv(0, 10, 2, "ten")];
        let mut rng = StdRng::seed_from_u64(1);
        let mut first = HashMap::new();
        for _ in 0..2000 {
            let ordered = order_srv(records.clone(), |t| rng.random_range(0..=t));
            *first.entry(ordered[0].target.clone()).or_insert(0) += 1;
        }
        let ninety = first["ninety"];
        assert!(
            (1700..1900).contains(&ninety),
            "ninety first {ninety} of 2000"
        );
    }

    #[tokio::test]
    async fn rfc3263_naptr_for_websocket_needs_the_transport_enabled() {
        let dns = StaticResolver::new()
            .with_naptr(
                "example.com",
                [
                    naptr(10, 10, "SIPS+D2W", "_sips._ws.example.com"),
                    naptr(10, 20, "SIP+D2T", "_sip._tcp.example.com"),
                ],
            )
            .with_srv("_sips._ws.example.com", [srv(0, 0, 443, "ws.example.com")])
            .with_srv(
                "_sip._tcp.example.com",
                [srv(0, 0, 5060, "tcp.example.com")],
            )
            .with_ip("ws.example.com", [ip("192.0.2.20")])
            .with_ip("tcp.example.com", [ip("192.0.2.21")]);
        let t = locate(&dns, "sip:example.com").await.unwrap();
        assert_eq!(summary(&t), ["TCP 192.0.2.21:5060"]);
        let uri = Uri::parse("sip:example.com").unwrap();
        let t = ServerLocator::new(&dns)
            .with_transports([TransportKind::Wss, TransportKind::Tcp])
            .locate(uri.as_sip().unwrap())
            .await
            .unwrap();
        assert_eq!(summary(&t), ["WSS 192.0.2.20:443", "TCP 192.0.2.21:5060"]);
        assert_eq!(t[0].server_name.as_deref(), Some("example.com"));
    }
}
