//! `sip-register`: registers with a SIP registrar.
//!
//! `sip-register --registrar URI --user U --password P [--transport udp|tcp|tls|ws|wss]
//!  [--ca FILE] [--expires N] [--once]`
//!
//! Exits 0 once the registrar answers 200 and prints the granted expiry. With
//! `--once` it stops there; without, it keeps the registration fresh until
//! interrupted, then removes it. Exits 1 with a message on failure (wrong
//! password, no answer, TLS error), 2 on bad arguments.
#![allow(clippy::print_stdout, reason = "a command-line tool reports on stdout")]

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use rand::SeedableRng;
use rand::rngs::StdRng;
use sip_core::auth::DigestClient;
use sip_core::endpoint::{ClientTxId, Destination, Endpoint, EndpointConfig, EndpointEvent};
use sip_core::registration::{Registration, RegistrationConfig, RegistrationEvent};
use sip_core::{Host, Uri};
use sip_tokio::{
    Driver, DriverEvent, ListenerOptions, OutboundMessage, TlsClientConfig, TransportConfig,
    TransportKind, Transports, core_transport,
};

#[derive(Parser, Debug)]
#[command(about = "Register with a SIP registrar")]
struct Args {
    /// The registrar, e.g. sip:pbx.example.com or sip:127.0.0.1:5060.
    #[arg(long)]
    registrar: String,
    /// User name (also the authentication user).
    #[arg(long)]
    user: String,
    /// Password.
    #[arg(long)]
    password: String,
    /// udp, tcp, tls, ws or wss.
    #[arg(long, default_value = "udp")]
    transport: String,
    /// CA certificate (PEM) that TLS servers must chain to; default: the system roots.
    #[arg(long)]
    ca: Option<String>,
    /// Requested expiry in seconds.
    #[arg(long, default_value_t = 3600)]
    expires: u32,
    /// Stop after the first successful registration.
    #[arg(long)]
    once: bool,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = Args::parse();
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(m)) => {
            eprintln!("sip-register: {m}");
            ExitCode::from(2)
        }
        Err(Failure::Failed(m)) => {
            eprintln!("sip-register: error: {m}");
            ExitCode::from(1)
        }
    }
}

enum Failure {
    Usage(String),
    Failed(String),
}

async fn run(args: Args) -> Result<(), Failure> {
    let kind = match args.transport.as_str() {
        "udp" => TransportKind::Udp,
        "tcp" => TransportKind::Tcp,
        "tls" => TransportKind::Tls,
        "ws" => TransportKind::Ws,
        "wss" => TransportKind::Wss,
        other => return Err(Failure::Usage(format!("unknown transport {other:?}"))),
    };
    let uri =
        Uri::parse(&args.registrar).map_err(|e| Failure::Usage(format!("--registrar: {e}")))?;
    let Uri::Sip(sip) = &uri else {
        return Err(Failure::Usage(
            "--registrar must be a sip: or sips: URI".into(),
        ));
    };
    let (ip, server_name) = match sip.host {
        Host::Ipv4(a) => (std::net::IpAddr::V4(a), a.to_string()),
        Host::Ipv6(a) => (std::net::IpAddr::V6(a), a.to_string()),
        Host::Domain(d) => {
            let resolved = tokio::net::lookup_host((d, 0))
                .await
                .map_err(|e| Failure::Failed(format!("cannot resolve {d}: {e}")))?
                .next()
                .ok_or_else(|| Failure::Failed(format!("{d} has no address")))?;
            (resolved.ip(), d.to_owned())
        }
    };
    let registrar = SocketAddr::new(ip, sip.port.unwrap_or(kind.default_port()));
    let domain = match sip.host {
        Host::Domain(d) => d.to_owned(),
        other => other.to_string(),
    };

    let mut config = TransportConfig::default();
    if kind.is_secure() {
        let tls = match &args.ca {
            Some(ca) => TlsClientConfig::with_ca_file(ca),
            None => TlsClientConfig::with_system_roots(),
        }
        .map_err(|e| Failure::Failed(format!("TLS setup: {e}")))?;
        config = config.with_tls_client(tls);
    }
    let (transports, incoming) = Transports::new(config);
    let any = if registrar.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    };
    let any: SocketAddr = if registrar.ip().is_loopback() {
        SocketAddr::new(registrar.ip(), 0)
    } else {
        any.parse()
            .map_err(|_| Failure::Usage("bad local address".into()))?
    };
    // The local address goes into Via and Contact: the UDP socket's, or the
    // connection's, opened with a keep-alive.
    let local = if kind == TransportKind::Udp {
        transports
            .bind(kind, any, ListenerOptions::new())
            .await
            .map_err(|e| Failure::Failed(format!("binding a UDP socket: {e}")))?
    } else {
        let ping = OutboundMessage::new(kind, registrar, &b"\r\n\r\n"[..])
            .with_server_name(server_name.clone());
        transports
            .send(ping)
            .await
            .map_err(|e| {
                Failure::Failed(format!(
                    "connecting to {registrar} over {}: {e}",
                    kind.via_transport()
                ))
            })?
            .local
    };
    let t = kind.via_transport();
    let mut reg_config = RegistrationConfig::new(
        &args.registrar,
        &format!("sip:{}@{domain}", args.user),
        &format!(
            "sip:{}@{local};transport={}",
            args.user,
            t.to_ascii_lowercase()
        ),
        &format!("SIP/2.0/{t} {local}"),
    );
    reg_config.expires = args.expires;
    let mut rng = StdRng::from_os_rng();
    let mut reg = Registration::new(
        reg_config,
        Some(DigestClient::new(&args.user, args.password.as_str())),
        &mut rng,
    );
    let endpoint = Endpoint::new(EndpointConfig::default(), StdRng::from_os_rng());
    let mut driver = Driver::new(transports, incoming, endpoint);
    // The REGISTER's connection is verified for the registrar's name too.
    driver.name_server(kind, registrar, server_name);
    let dest = Destination {
        transport: core_transport(kind),
        addr: registrar,
        connection: None,
    };
    reg.register(&mut rng);
    let mut in_flight: Option<ClientTxId> = None;
    let mut stopping = false;
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    let mut give_up: Option<tokio::time::Instant> = None;
    loop {
        while let Some(req) = reg.poll_request() {
            let now = sip_tokio::now();
            match driver.endpoint().send_request(now, req, dest) {
                Ok(tx) => in_flight = Some(tx),
                Err(e) => return Err(Failure::Failed(format!("cannot send REGISTER: {e}"))),
            }
        }
        while let Some(ev) = reg.poll_event() {
            match ev {
                RegistrationEvent::Registered { expires } => {
                    println!("registered: expires {expires}");
                    if args.once {
                        return Ok(());
                    }
                }
                RegistrationEvent::Unregistered => {
                    println!("unregistered");
                    return Ok(());
                }
                RegistrationEvent::Failed {
                    status,
                    reason,
                    will_retry,
                    ..
                } => {
                    let what = match status {
                        401 | 407 => "the registrar rejected the credentials".to_owned(),
                        408 => "no response from the registrar".to_owned(),
                        s => format!("the registrar answered {s} {reason}"),
                    };
                    if args.once || !will_retry || stopping {
                        return Err(Failure::Failed(format!("{what} ({status})")));
                    }
                    eprintln!("sip-register: {what} ({status}); retrying");
                }
                _ => {}
            }
        }
        if give_up.is_some_and(|g| g <= tokio::time::Instant::now()) {
            return Err(Failure::Failed("no answer to the un-registration".into()));
        }
        let wakeup = [
            reg.poll_timeout(),
            give_up.map(tokio::time::Instant::into_std),
        ]
        .into_iter()
        .flatten()
        .min();
        let event = tokio::select! {
            e = driver.next(wakeup) => e,
            _ = &mut interrupted, if !stopping => {
                stopping = true;
                reg.unregister(&mut rng);
                give_up = Some(tokio::time::Instant::now() + Duration::from_secs(10));
                continue;
            }
        };
        let now = sip_tokio::now();
        match event {
            None => return Err(Failure::Failed("the transport shut down".into())),
            Some(DriverEvent::Endpoint(EndpointEvent::Response {
                transaction,
                response,
            })) => {
                if Some(transaction) == in_flight && response.status().is_some_and(|s| s >= 200) {
                    in_flight = None;
                    reg.handle_response(now, &response, &mut rng);
                }
            }
            Some(DriverEvent::Endpoint(
                EndpointEvent::ClientTimedOut { transaction }
                | EndpointEvent::ClientTransportError { transaction },
            )) => {
                if Some(transaction) == in_flight {
                    in_flight = None;
                    reg.handle_failure(now, &mut rng);
                }
            }
            Some(DriverEvent::SendFailed { error, .. }) => {
                if args.once {
                    return Err(Failure::Failed(format!("sending to {registrar}: {error}")));
                }
                eprintln!("sip-register: sending to {registrar}: {error}");
            }
            Some(_) => reg.handle_timeout(now, &mut rng),
        }
    }
}
