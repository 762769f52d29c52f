//! Arbitrary operation sequences against the sans-IO endpoint: requests and
//! responses from the user, datagrams and stream bytes from the network, time
//! passing. Invariants: no panic, and the next deadline is never before the
//! time of the last input.
#![no_main]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use arbitrary::Arbitrary;
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use rand::SeedableRng;
use sip_core::endpoint::{ConnectionId, Destination, Endpoint, EndpointConfig, EndpointEvent, Input, Transport};
use sip_core::{Message, Method};

#[derive(Debug, Arbitrary)]
enum Op {
    /// The user sends a request of this method.
    Request { method: u8, reliable: bool },
    /// The user answers the n-th received request.
    Respond { which: u8, status: u16 },
    /// The user cancels the n-th INVITE it sent.
    Cancel { which: u8 },
    /// A datagram arrives: a response to one of our requests, a request, or junk.
    Datagram { kind: u8, status: u16, junk: Vec<u8> },
    /// Stream bytes arrive on a connection.
    Stream { connection: u8, data: Vec<u8> },
    /// A connection closes or a send fails.
    Closed { connection: u8 },
    TransportError { reliable: bool },
    /// Time passes.
    Advance { millis: u16 },
}

const METHODS: [Method; 4] = [Method::Invite, Method::Options, Method::Register, Method::Bye];

fn peer() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 5070))
}

fn request(method: &Method, branch: &str, cseq: u32) -> Message {
    Message::request(method.clone(), "sip:bob@127.0.0.1:5070")
        .header("Via", &format!("SIP/2.0/UDP 127.0.0.1:5060;branch={branch};rport"))
        .and_then(|b| b.header("From", "<sip:alice@example.com>;tag=a"))
        .and_then(|b| b.header("To", "<sip:bob@example.com>"))
        .and_then(|b| b.header("Call-ID", "fuzz-call"))
        .and_then(|b| b.header("CSeq", &format!("{cseq} {method}")))
        .and_then(|b| b.header("Max-Forwards", "70"))
        .and_then(|b| b.build())
        .expect("template request builds")
}

fuzz_target!(|ops: Vec<Op>| {
    let mut ep = Endpoint::new(EndpointConfig::default(), rand::rngs::StdRng::seed_from_u64(1));
    let start = Instant::now();
    let mut now = start;
    let mut sent: Vec<(Message, Option<sip_core::endpoint::ClientTxId>)> = Vec::new();
    let mut received = Vec::new();
    let mut cseq = 1;
    for op in ops.into_iter().take(200) {
        match op {
            Op::Request { method, reliable } => {
                let m = &METHODS[usize::from(method) % METHODS.len()];
                let branch = ep.new_branch();
                cseq += 1;
                let req = request(m, &branch, cseq);
                let dest = Destination {
                    transport: if reliable { Transport::Tcp } else { Transport::Udp },
                    addr: peer(),
                    connection: reliable.then_some(ConnectionId(1)),
                };
                let id = ep.send_request(now, req.clone(), dest).ok();
                sent.push((req, id));
            }
            Op::Respond { which, status } => {
                if !received.is_empty() {
                    let (tx, req): &(_, Message) = &received[usize::from(which) % received.len()];
                    if let Ok(b) = Message::response_to(req, 100 + status % 600, "X") {
                        if let Ok(resp) = b.to_tag("t").build() {
                            let _ = ep.send_response(now, *tx, resp);
                        }
                    }
                }
            }
            Op::Cancel { which } => {
                if let Some((_, Some(id))) = sent.get(usize::from(which) % sent.len().max(1)) {
                    let _ = ep.cancel(now, *id);
                }
            }
            Op::Datagram { kind, status, junk } => {
                let data: Bytes = match (kind % 3, sent.get(usize::from(kind) % sent.len().max(1))) {
                    (0, Some((req, _))) => match Message::response_to(req, 100 + status % 600, "R")
                        .and_then(|b| b.to_tag("b").build())
                    {
                        Ok(r) => r.to_bytes(),
                        Err(_) => Bytes::from(junk),
                    },
                    (1, _) => {
                        let m = &METHODS[usize::from(status) % METHODS.len()];
                        request(m, &format!("z9hG4bKpeer{}", status % 7), u32::from(status % 5)).to_bytes()
                    }
                    _ => Bytes::from(junk),
                };
                ep.handle_input(now, Input::Datagram { transport: Transport::Udp, remote: peer(), data });
            }
            Op::Stream { connection, data } => {
                ep.handle_input(now, Input::Stream {
                    transport: Transport::Tcp,
                    connection: ConnectionId(u64::from(connection % 4)),
                    remote: peer(),
                    data: Bytes::from(data),
                });
            }
            Op::Closed { connection } => {
                ep.handle_input(now, Input::ConnectionClosed {
                    connection: ConnectionId(u64::from(connection % 4)),
                    transport: Transport::Tcp,
                    remote: Some(peer()),
                });
            }
            Op::TransportError { reliable } => {
                ep.handle_input(now, Input::TransportError {
                    destination: Destination {
                        transport: if reliable { Transport::Tcp } else { Transport::Udp },
                        addr: peer(),
                        connection: reliable.then_some(ConnectionId(1)),
                    },
                });
            }
            Op::Advance { millis } => {
                now += Duration::from_millis(u64::from(millis));
                ep.handle_timeout(now);
            }
        }
        while ep.poll_transmit().is_some() {}
        while let Some(ev) = ep.poll_event() {
            if let EndpointEvent::Request { transaction, request, .. } = ev {
                if received.len() < 64 {
                    received.push((transaction, request));
                }
            }
        }
        if let Some(next) = ep.poll_timeout() {
            // Stale entries may be early but never before the last input's time.
            assert!(next >= start, "deadline before the epoch");
            ep.handle_timeout(now);
            if let Some(after) = ep.poll_timeout() {
                assert!(after > now, "handle_timeout(now) left a deadline at or before now");
            }
        }
        while ep.poll_transmit().is_some() {}
        while ep.poll_event().is_some() {}
    }
});
