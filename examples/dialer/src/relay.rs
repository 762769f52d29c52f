//! `dialer register` through relay proxies: SIP outbound flows (RFC 5626)
//! with keep-alives, fail-over and re-registration, and push parameters in
//! the Contact (RFC 8599).

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use proxy_client::InstanceId;
use proxy_client::outbound::{OutboundConfig, ProxyTarget};
use proxy_client::outbound_client::{OutboundClient, OutboundClientConfig, OutboundEvent};
use proxy_client::push::PushToken;
use sip_core::endpoint::Transport;
use sip_core::{Host, Uri};
use sip_tokio::{TlsClientConfig, TransportConfig};
use tokio::time::{Instant, timeout_at};

use crate::options::{AccountArgs, UsageError};

const INSTANCE_FILE: &str = "instance-id";

/// Push settings from the command line.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct PushArgs {
    /// Push service (`pn-provider`), e.g. apns or fcm.
    #[arg(long)]
    pub(crate) push_provider: Option<String>,
    /// Device token (`pn-prid`).
    #[arg(long)]
    pub(crate) push_prid: Option<String>,
    /// Provider parameter (`pn-param`), e.g. the app's topic.
    #[arg(long)]
    pub(crate) push_param: Option<String>,
}

impl PushArgs {
    pub(crate) fn is_set(&self) -> bool {
        self.push_provider.is_some() || self.push_prid.is_some()
    }
}

/// This installation's `+sip.instance`, made once and kept in the profile.
pub(crate) fn instance_id(profile: &Path) -> Result<InstanceId> {
    let path = profile.join(INSTANCE_FILE);
    if let Ok(text) = std::fs::read_to_string(&path)
        && let Ok(id) = InstanceId::parse(text.trim())
    {
        return Ok(id);
    }
    let id = InstanceId::generate(&mut rand::rng());
    // It identifies the device to every registrar: the owner's only.
    crate::profile::write_private(&path, id.to_string().as_bytes())
        .context("storing the instance id")?;
    Ok(id)
}

async fn proxy_target(uri: &str) -> Result<ProxyTarget> {
    let parsed = Uri::parse(uri).map_err(|e| UsageError(format!("--proxy {uri:?}: {e}")))?;
    let Uri::Sip(sip) = &parsed else {
        bail!(UsageError(format!("--proxy {uri:?}: not a sip: URI")));
    };
    let transport = match sip.transport().map(str::to_ascii_lowercase).as_deref() {
        Some("tcp") => Transport::Tcp,
        Some("ws") => Transport::Ws,
        Some("wss") => Transport::Wss,
        Some("udp") => Transport::Udp,
        Some("tls") => Transport::Tls,
        _ if sip.scheme == sip_core::SipScheme::Sips => Transport::Tls,
        _ => Transport::Tls,
    };
    let default_port = match transport {
        Transport::Tls | Transport::Wss => 5061,
        _ => 5060,
    };
    let port = sip.port.unwrap_or(default_port);
    let (addr, name) = match sip.host {
        Host::Ipv4(a) => (SocketAddr::new(IpAddr::V4(a), port), None),
        Host::Ipv6(a) => (SocketAddr::new(IpAddr::V6(a), port), None),
        Host::Domain(d) => {
            let addr = tokio::net::lookup_host((d, port))
                .await
                .with_context(|| format!("resolving {d}"))?
                .next()
                .with_context(|| format!("{d} has no address"))?;
            (addr, Some(d.to_owned()))
        }
    };
    Ok(ProxyTarget {
        transport,
        addr,
        server_name: name,
    })
}

pub(crate) async fn register(
    profile: &Path,
    account: &AccountArgs,
    proxies: &[String],
    push: &PushArgs,
    stay: Option<u64>,
) -> Result<bool> {
    let (Some(registrar), Some(user)) = (&account.registrar, &account.user) else {
        bail!(UsageError("--registrar and --user are needed".into()));
    };
    if proxies.is_empty() {
        bail!(UsageError(
            "push registration goes through a relay: give --proxy".into()
        ));
    }
    let mut targets = Vec::new();
    for p in proxies {
        targets.push(proxy_target(p).await?);
    }
    let aor = aor_of(registrar, user)?;
    let mut transport = TransportConfig::default();
    let tls = match &account.ca {
        Some(ca) => TlsClientConfig::with_ca_file(ca),
        None => TlsClientConfig::with_system_roots(),
    }
    .map_err(|e| anyhow::anyhow!("TLS setup: {e}"))?;
    transport = transport.with_tls_client(tls);
    let mut config = OutboundClientConfig::new(
        registrar,
        &aor,
        user,
        instance_id(profile)?,
        OutboundConfig::new(targets),
    )
    .with_transport(transport);
    if let Some(p) = &account.password {
        config = config.with_credentials(account.auth_user.as_deref().unwrap_or(user), p);
    }
    if push.is_set() {
        let (Some(provider), Some(prid)) = (&push.push_provider, &push.push_prid) else {
            bail!(UsageError(
                "--push-provider and --push-prid go together".into()
            ));
        };
        let mut token =
            PushToken::new(provider, prid).map_err(|e| UsageError(format!("push token: {e}")))?;
        if let Some(param) = &push.push_param {
            token = token
                .with_param(param)
                .map_err(|e| UsageError(format!("--push-param: {e}")))?;
        }
        config = config.with_push(token);
    }
    let (handle, mut events) = OutboundClient::spawn(config)?;
    let first_deadline = Instant::now() + Duration::from_secs(20);
    let end = stay.map(|s| Instant::now() + Duration::from_secs(s));
    let mut registered = false;
    loop {
        let deadline = match (registered, end) {
            (_, Some(e)) => e,
            (false, None) => first_deadline,
            (true, None) => break,
        };
        let Ok(Some(ev)) = timeout_at(deadline, events.recv()).await else {
            break;
        };
        match ev {
            OutboundEvent::FlowUp { proxy, .. } => println!("flow up through proxy {}", proxy + 1),
            OutboundEvent::Registered { expires, .. } => {
                registered = true;
                println!("registered (expires {expires} s)");
            }
            OutboundEvent::FlowFailed { proxy, reason, .. } => {
                registered = false;
                println!("flow through proxy {} failed: {reason:?}", proxy + 1);
            }
            OutboundEvent::RegistrationFailed { status, reason, .. } => {
                registered = false;
                println!("registration failed: {status} {reason}");
            }
            OutboundEvent::BackingOff { until, .. } => {
                registered = false;
                let wait = until.saturating_duration_since(std::time::Instant::now());
                println!("all proxies failed; next attempt in {} s", wait.as_secs());
            }
            OutboundEvent::PushRefused { .. } => {
                println!("the proxy refused push (555): registered without push parameters");
            }
            _ => {}
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), handle.shutdown()).await;
    if registered {
        println!("unregistered");
    }
    Ok(registered)
}

/// The address of record of `user` at `registrar`: its host (no port,
/// parameters or scheme) is the domain.
fn aor_of(registrar: &str, user: &str) -> Result<String> {
    let parsed = Uri::parse(registrar)
        .map_err(|e| UsageError(format!("--registrar {registrar:?} is not a SIP URI: {e}")))?;
    let Some(sip) = parsed.as_sip() else {
        bail!(UsageError(format!(
            "--registrar {registrar:?} is not a sip: or sips: URI"
        )));
    };
    Ok(format!("sip:{user}@{}", sip.host))
}

#[cfg(test)]
mod tests {
    use super::aor_of;

    #[test]
    fn the_address_of_record_takes_the_registrars_host() {
        for (registrar, aor) in [
            ("sip:pbx.example.com", "sip:alice@pbx.example.com"),
            ("sips:pbx.example.com", "sip:alice@pbx.example.com"),
            (
                "sip:pbx.example.com:5061;transport=tls",
                "sip:alice@pbx.example.com",
            ),
            ("sip:[2001:db8::1]", "sip:alice@[2001:db8::1]"),
            ("sip:[2001:db8::1]:5060", "sip:alice@[2001:db8::1]"),
        ] {
            assert_eq!(aor_of(registrar, "alice").unwrap(), aor, "{registrar}");
        }
        assert!(aor_of("http://pbx.example.com", "alice").is_err());
        assert!(aor_of("not a uri", "alice").is_err());
    }
}
