//! One whole call, INVITE/180/200/ACK/BYE/200, between two sans-IO endpoints:
//! the workload of the `sip_transaction` benchmark.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use sip_core::endpoint::{Destination, Endpoint, EndpointEvent, Input, Transport};
use sip_core::{Message, Method};

fn dest(port: u16) -> Destination {
    Destination {
        transport: Transport::Udp,
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
        connection: None,
    }
}

/// Moves everything `from` wants to send into `to`.
fn deliver(now: Instant, from: &mut Endpoint<StdRng>, from_port: u16, to: &mut Endpoint<StdRng>) {
    while let Some(t) = from.poll_transmit() {
        to.handle_input(
            now,
            Input::Datagram {
                transport: Transport::Udp,
                remote: SocketAddr::from(([127, 0, 0, 1], from_port)),
                data: t.payload,
            },
        );
    }
}

pub(crate) fn call(
    now: Instant,
    alice: &mut Endpoint<StdRng>,
    bob: &mut Endpoint<StdRng>,
    n: u64,
) -> usize {
    let branch = alice.new_branch();
    let invite = Message::request(Method::Invite, "sip:bob@127.0.0.1:5062")
        .header(
            "Via",
            &format!("SIP/2.0/UDP 127.0.0.1:5060;branch={branch};rport"),
        )
        .and_then(|b| b.header("Max-Forwards", "70"))
        .and_then(|b| b.header("From", "\"Alice\" <sip:alice@example.com>;tag=a1"))
        .and_then(|b| b.header("To", "<sip:bob@example.com>"))
        .and_then(|b| b.header("Call-ID", &format!("bench-{n}")))
        .and_then(|b| b.header("CSeq", "1 INVITE"))
        .and_then(|b| b.header("Contact", "<sip:alice@127.0.0.1:5060>"))
        .and_then(|b| b.build())
        .expect("invite");
    alice.send_request(now, invite, dest(5062)).expect("send");
    deliver(now, alice, 5060, bob);
    let Some(EndpointEvent::Request {
        transaction,
        request,
        ..
    }) = bob.poll_event()
    else {
        panic!("bob got no INVITE")
    };
    for (status, reason) in [(180, "Ringing"), (200, "OK")] {
        let resp = Message::response_to(&request, status, reason)
            .and_then(|b| b.header("Contact", "<sip:bob@127.0.0.1:5062>"))
            .map(|b| b.to_tag("b1"))
            .and_then(|b| b.build())
            .expect("response");
        bob.send_response(now, transaction, resp).expect("respond");
    }
    deliver(now, bob, 5062, alice);
    let mut events = 0;
    while alice.poll_event().is_some() {
        events += 1;
    }
    // ACK for the 2xx and BYE, as the dialog layer would send them.
    let ack_branch = alice.new_branch();
    let ack = Message::request(Method::Ack, "sip:bob@127.0.0.1:5062")
        .header(
            "Via",
            &format!("SIP/2.0/UDP 127.0.0.1:5060;branch={ack_branch};rport"),
        )
        .and_then(|b| b.header("Max-Forwards", "70"))
        .and_then(|b| b.header("From", "\"Alice\" <sip:alice@example.com>;tag=a1"))
        .and_then(|b| b.header("To", "<sip:bob@example.com>;tag=b1"))
        .and_then(|b| b.header("Call-ID", &format!("bench-{n}")))
        .and_then(|b| b.header("CSeq", "1 ACK"))
        .and_then(|b| b.build())
        .expect("ack");
    alice.send_stateless(dest(5062), &ack);
    let bye_branch = alice.new_branch();
    let bye = Message::request(Method::Bye, "sip:bob@127.0.0.1:5062")
        .header(
            "Via",
            &format!("SIP/2.0/UDP 127.0.0.1:5060;branch={bye_branch};rport"),
        )
        .and_then(|b| b.header("Max-Forwards", "70"))
        .and_then(|b| b.header("From", "\"Alice\" <sip:alice@example.com>;tag=a1"))
        .and_then(|b| b.header("To", "<sip:bob@example.com>;tag=b1"))
        .and_then(|b| b.header("Call-ID", &format!("bench-{n}")))
        .and_then(|b| b.header("CSeq", "2 BYE"))
        .and_then(|b| b.build())
        .expect("bye");
    alice.send_request(now, bye, dest(5062)).expect("bye");
    deliver(now, alice, 5060, bob);
    while let Some(ev) = bob.poll_event() {
        events += 1;
        if let EndpointEvent::Request {
            transaction,
            request,
            ..
        } = ev
        {
            let ok = Message::response_to(&request, 200, "OK")
                .and_then(|b| b.build())
                .expect("200");
            bob.send_response(now, transaction, ok).expect("respond");
        }
    }
    deliver(now, bob, 5062, alice);
    while alice.poll_event().is_some() {
        events += 1;
    }
    events
}

/// Every transaction of a call has ended by then (Timers H, J, L and M are
/// 64*T1 = 32 s; I and K are T4 = 5 s).
pub(crate) const CALL_SPAN: Duration = Duration::from_secs(64);

/// [`call`] at `now`, then both endpoints' timers up to `now + CALL_SPAN`, so
/// every transaction of the call has ended and memory stays bounded, as in a
/// server that runs for hours.
pub(crate) fn call_to_the_end(
    now: Instant,
    alice: &mut Endpoint<StdRng>,
    bob: &mut Endpoint<StdRng>,
    n: u64,
) -> usize {
    let events = call(now, alice, bob, n);
    alice.handle_timeout(now + CALL_SPAN);
    bob.handle_timeout(now + CALL_SPAN);
    events
}
