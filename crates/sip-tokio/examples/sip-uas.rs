//! `sip-uas`: a user agent server for tests and load runs.
//!
//! `sip-uas --listen ADDR --transport udp|tcp|tls|ws [--cert F --key F]`
//!
//! Answers OPTIONS with 200; INVITE with 180 and a 200 carrying SDP (resent
//! until the ACK comes, RFC 3261 §13.3.1.4); absorbs ACK; BYE with 200;
//! CANCEL as RFC 3261 §9.2 says (200 to the CANCEL, 487 to the INVITE);
//! with `--hangup-after MS` it ends each call itself with BYE. Runs
//! until interrupted or `--duration` passes, then prints what it served.
#![allow(clippy::print_stdout, reason = "a command-line tool reports on stdout")]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use rand::SeedableRng;
use rand::rngs::StdRng;
use sip_core::dialog::{Dialog, UasInviteResponder};
use sip_core::endpoint::{Destination, Endpoint, EndpointConfig, EndpointEvent, ServerTxId};
use sip_core::transaction::TimerConfig;
use sip_core::{Message, Method};
use sip_tokio::{
    Driver, DriverEvent, ListenerOptions, TlsServerConfig, TransportConfig, TransportKind,
    Transports,
};

#[derive(Parser, Debug)]
#[command(about = "SIP user agent server: answers OPTIONS, INVITE, BYE and CANCEL")]
struct Args {
    /// Address to listen on, e.g. 127.0.0.1:5070.
    #[arg(long)]
    listen: SocketAddr,
    /// udp, tcp, tls or ws.
    #[arg(long, default_value = "udp")]
    transport: String,
    /// Certificate chain (PEM) for tls.
    #[arg(long)]
    cert: Option<String>,
    /// Private key (PEM) for tls.
    #[arg(long)]
    key: Option<String>,
    /// Stop after this many seconds (default: run until interrupted).
    #[arg(long)]
    duration: Option<u64>,
    /// End each answered call with a BYE of our own after this many
    /// milliseconds (the far end hangs up).
    #[arg(long)]
    hangup_after: Option<u64>,
}

/// Counters printed at the end.
#[derive(Debug, Default)]
struct Served {
    invites: u64,
    acks: u64,
    byes: u64,
    options: u64,
    cancels: u64,
    other: u64,
}

const SDP: &str = "v=0\r\no=sip-uas 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 6000 RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=sendrecv\r\n";

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let kind = match args.transport.as_str() {
        "udp" => TransportKind::Udp,
        "tcp" => TransportKind::Tcp,
        "tls" => TransportKind::Tls,
        "ws" => TransportKind::Ws,
        other => bail!("unknown transport {other:?} (udp, tcp, tls or ws)"),
    };
    let mut options = ListenerOptions::new();
    if kind == TransportKind::Tls {
        let (Some(cert), Some(key)) = (&args.cert, &args.key) else {
            bail!("--transport tls needs --cert and --key");
        };
        options = options.with_tls(
            TlsServerConfig::from_pem_files(cert, key).context("loading the certificate")?,
        );
    }
    let (transports, incoming) = Transports::new(TransportConfig::default());
    let local = transports
        .bind(kind, args.listen, options)
        .await
        .with_context(|| format!("binding {} on {}", kind.via_transport(), args.listen))?;
    println!("sip-uas: listening on {} {local}", kind.via_transport());
    let endpoint = Endpoint::new(EndpointConfig::default(), StdRng::from_os_rng());
    let mut driver = Driver::new(transports, incoming, endpoint);
    let stop_at = args
        .duration
        .map(|s| sip_tokio::now() + Duration::from_secs(s));
    let contact = format!(
        "<sip:uas@{local};transport={}>",
        kind.via_transport().to_ascii_lowercase()
    );
    let mut served = Served::default();
    // 2xx resent until ACK, per Call-ID.
    let mut responders: HashMap<String, (UasInviteResponder, Destination)> = HashMap::new();
    // INVITEs answered only with 180 so far (none: this UAS answers at once),
    // kept so a CANCEL finds them.
    let mut ringing: HashMap<ServerTxId, Message> = HashMap::new();
    // Calls to end with our own BYE, and when.
    let mut hangups: Vec<(Instant, Dialog, Destination)> = Vec::new();
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    loop {
        let wakeup = [
            stop_at,
            responders
                .values()
                .filter_map(|(r, _)| r.poll_timeout())
                .min(),
            hangups.iter().map(|(at, _, _)| *at).min(),
        ]
        .into_iter()
        .flatten()
        .min();
        let event = tokio::select! {
            e = driver.next(wakeup) => e,
            _ = &mut interrupted => None,
        };
        let Some(event) = event else { break };
        let now = sip_tokio::now();
        match event {
            DriverEvent::Endpoint(EndpointEvent::Request {
                transaction,
                request,
                source,
            }) => {
                let ep = driver.endpoint();
                match request.method() {
                    Some(Method::Invite) => {
                        served.invites += 1;
                        let tag = answer_invite(
                            ep,
                            now,
                            transaction,
                            &request,
                            source,
                            &contact,
                            &mut responders,
                            &mut ringing,
                        );
                        if let (Some(ms), Some(tag)) = (args.hangup_after, tag) {
                            let target = contact.trim_matches(['<', '>']);
                            if let Some(dialog) = Dialog::as_uas(&request, &tag, target) {
                                hangups.push((now + Duration::from_millis(ms), dialog, source));
                            }
                        }
                    }
                    Some(Method::Options) => {
                        served.options += 1;
                        respond(ep, now, transaction, &request, 200, "OK", None);
                    }
                    Some(Method::Bye) => {
                        served.byes += 1;
                        respond(ep, now, transaction, &request, 200, "OK", None);
                    }
                    _ => {
                        served.other += 1;
                        respond(ep, now, transaction, &request, 501, "Not Implemented", None);
                    }
                }
            }
            DriverEvent::Endpoint(EndpointEvent::Ack { request, .. }) => {
                served.acks += 1;
                if let Ok(id) = request.call_id() {
                    if let Some((r, _)) = responders.get_mut(id) {
                        r.handle_ack();
                    }
                    responders.remove(id);
                }
            }
            DriverEvent::Endpoint(EndpointEvent::Cancelled { invite, .. }) => {
                served.cancels += 1;
                if let Some(req) = ringing.remove(&invite) {
                    respond(
                        driver.endpoint(),
                        now,
                        invite,
                        &req,
                        487,
                        "Request Terminated",
                        None,
                    );
                }
            }
            DriverEvent::Wakeup if stop_at.is_some_and(|s| s <= now) => {
                break;
            }
            _ => {}
        }
        // Far-end hang-ups that are due.
        let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut hangups)
            .into_iter()
            .partition(|(at, _, _)| *at <= now);
        hangups = later;
        for (_, mut dialog, source) in due {
            let ep = driver.endpoint();
            let via = format!(
                "SIP/2.0/{} {local};branch={};rport",
                kind.via_transport(),
                ep.new_branch()
            );
            if let Some(bye) = dialog.request(Method::Bye, &via) {
                let _ = ep.send_request(now, bye, source);
            }
        }
        // Resend 2xx whose ACK is late; forget those that never got one.
        let mut done = Vec::new();
        for (call_id, (r, dest)) in &mut responders {
            r.handle_timeout(now);
            while let Some(m) = r.poll_transmit() {
                driver.endpoint().send_stateless(*dest, &m);
            }
            if r.has_failed(now) {
                done.push(call_id.clone());
            }
        }
        for c in done {
            responders.remove(&c);
        }
    }
    driver.flush().await;
    driver.settle(Duration::from_secs(2)).await;
    println!(
        "sip-uas: served {} INVITE, {} ACK, {} BYE, {} OPTIONS, {} CANCEL, {} other",
        served.invites, served.acks, served.byes, served.options, served.cancels, served.other
    );
    Ok(())
}

fn respond(
    ep: &mut Endpoint<StdRng>,
    now: Instant,
    tx: ServerTxId,
    request: &Message,
    status: u16,
    reason: &str,
    tag: Option<&str>,
) {
    let tag = tag.map_or_else(|| ep.new_tag(), str::to_owned);
    if let Ok(resp) = Message::response_to(request, status, reason)
        .map(|b| b.to_tag(&tag))
        .and_then(|b| b.build())
    {
        let _ = ep.send_response(now, tx, resp);
    }
}

#[allow(
    clippy::too_many_arguments,
    reason = "the example keeps its state in main"
)]
fn answer_invite(
    ep: &mut Endpoint<StdRng>,
    now: Instant,
    tx: ServerTxId,
    request: &Message,
    source: Destination,
    contact: &str,
    responders: &mut HashMap<String, (UasInviteResponder, Destination)>,
    ringing: &mut HashMap<ServerTxId, Message>,
) -> Option<String> {
    let tag = ep.new_tag();
    respond(ep, now, tx, request, 180, "Ringing", Some(&tag));
    let ok = Message::response_to(request, 200, "OK")
        .and_then(|b| b.header("Contact", contact))
        .and_then(|b| b.header("Content-Type", "application/sdp"))
        .map(|b| b.to_tag(&tag).body(SDP.as_bytes().to_vec()))
        .and_then(|b| b.build());
    let Ok(ok) = ok else {
        ringing.insert(tx, request.clone());
        return None;
    };
    if ep.send_response(now, tx, ok.clone()).is_err() {
        return None;
    }
    // Over UDP the UAS core resends the 2xx until the ACK (§13.3.1.4); over a
    // reliable transport once is enough.
    if source.transport == sip_core::endpoint::Transport::Udp
        && let (Ok(call_id), Some(dest)) =
            (request.call_id(), response_destination(request, source))
    {
        responders.insert(
            call_id.to_owned(),
            (
                UasInviteResponder::new(now, ok, TimerConfig::default()),
                dest,
            ),
        );
    }
    Some(tag)
}

/// Where a stateless 2xx retransmission goes: back to the request's source.
fn response_destination(request: &Message, source: Destination) -> Option<Destination> {
    let via = request.via().ok()?;
    let port = match via.rport() {
        Some(Some(p)) => p,
        _ => source.addr.port(),
    };
    let ip = via.received().unwrap_or(source.addr.ip());
    Some(Destination {
        addr: SocketAddr::new(ip, port),
        ..source
    })
}
