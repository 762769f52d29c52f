//! RFC 5626 flows: fail-over, §4.5 back-off, §4.4 keep-alives.

use std::time::{Duration, Instant};

use proxy_client::outbound::{
    FlowAction, FlowFailure, FlowId, FlowManager, MAX_FLOW_TIMER, OutboundConfig, ProxyTarget,
    flow_timer,
};
use proxy_client::stun::{Attribute, Class, Method, StunMessage};
use sip_core::endpoint::Transport;

use crate::FixedRng;

fn proxies(n: usize, transport: Transport) -> Vec<ProxyTarget> {
    (0..n)
        .map(|i| {
            ProxyTarget::new(
                transport,
                format!("127.0.0.{}:5061", i + 1).parse().unwrap(),
            )
        })
        .collect()
}

fn manager(n: usize, flows: usize, rng: FixedRng) -> FlowManager<FixedRng> {
    let mut config = OutboundConfig::new(proxies(n, Transport::Tls));
    config.flows = flows;
    FlowManager::new(config, rng).unwrap()
}

fn drain(m: &mut FlowManager<FixedRng>) -> Vec<FlowAction> {
    std::iter::from_fn(|| m.poll_action()).collect()
}

fn connect_of(actions: &[FlowAction]) -> Option<(FlowId, usize)> {
    actions.iter().find_map(|a| match a {
        FlowAction::Connect { flow, proxy, .. } => Some((*flow, *proxy)),
        _ => None,
    })
}

/// Brings a flow up: connected, registered.
fn bring_up(m: &mut FlowManager<FixedRng>, now: Instant, flow: FlowId) -> Vec<FlowAction> {
    m.handle_connected(now, flow);
    let register = drain(m);
    assert!(matches!(register[..], [FlowAction::Register { flow: f, .. }] if f == flow));
    m.handle_registered(now, flow, None);
    drain(m)
}

#[test]
fn rfc5626_4_5_first_proxy_dead_fails_over_to_the_second_at_once() {
    let t0 = Instant::now();
    let mut m = manager(2, 1, FixedRng::highest());
    m.start(t0);
    let (flow, proxy) = connect_of(&drain(&mut m)).unwrap();
    assert_eq!(proxy, 0);
    m.handle_connect_failed(t0, flow);
    let actions = drain(&mut m);
    assert!(actions.contains(&FlowAction::FlowFailed {
        flow,
        reg_id: 1,
        proxy: 0,
        reason: FlowFailure::ConnectFailed
    }));
    let (second, proxy) = connect_of(&actions).unwrap();
    assert_eq!(proxy, 1, "the next proxy, without waiting");
    let up = bring_up(&mut m, t0, second);
    assert_eq!(
        up,
        [FlowAction::FlowUp {
            flow: second,
            reg_id: 1,
            proxy: 1
        }]
    );
    assert_eq!(m.proxy_failures(), [1, 0]);
    assert!(m.is_up());
}

/// One proxy that never answers: the attempts follow
/// W = min(1800, 30 * 2^failures), times 50 % (lowest jitter) or 100 %.
#[test]
fn rfc5626_4_5_back_off_doubles_from_30_s_up_to_1800_s_with_jitter() {
    for (rng, expected) in [
        (
            FixedRng::lowest(),
            // 50 % of 60, 120, 240, 480, 960, 1800 ...
            [30, 60, 120, 240, 480, 900, 900, 900],
        ),
        (
            FixedRng::highest(),
            [60, 120, 240, 480, 960, 1800, 1800, 1800],
        ),
    ] {
        let t0 = Instant::now();
        let mut m = manager(1, 1, rng);
        m.start(t0);
        let mut now = t0;
        let mut waits = Vec::new();
        for _ in 0..expected.len() {
            let (flow, _) = connect_of(&drain(&mut m)).expect("a connect attempt");
            m.handle_connect_failed(now, flow);
            let until = drain(&mut m)
                .iter()
                .find_map(|a| match a {
                    FlowAction::BackingOff { until, .. } => Some(*until),
                    _ => None,
                })
                .expect("a back-off");
            waits.push((until - now).as_secs());
            // Nothing happens a moment early; the attempt goes out on time.
            m.handle_timeout(until - Duration::from_millis(1));
            assert!(m.poll_action().is_none());
            now = until;
            m.handle_timeout(now);
        }
        assert_eq!(waits, expected);
        assert_eq!(m.proxy_failures(), [expected.len() as u32]);
    }
}

#[test]
fn rfc5626_4_5_base_is_90_s_while_another_flow_is_up() {
    let t0 = Instant::now();
    let mut m = manager(2, 2, FixedRng::lowest());
    m.start(t0);
    let actions = drain(&mut m);
    let connects: Vec<(FlowId, usize)> = actions
        .iter()
        .filter_map(|a| match a {
            FlowAction::Connect { flow, proxy, .. } => Some((*flow, *proxy)),
            _ => None,
        })
        .collect();
    assert_eq!(
        connects.iter().map(|c| c.1).collect::<Vec<_>>(),
        [0, 1],
        "one proxy per flow"
    );
    bring_up(&mut m, t0, connects[0].0);
    m.handle_connect_failed(t0, connects[1].0);
    let actions = drain(&mut m);
    // Proxy 0 is taken by reg-id 1, proxy 1 backs off 50 % of 90 * 2.
    assert!(
        actions.contains(&FlowAction::BackingOff {
            reg_id: 2,
            until: t0 + Duration::from_secs(90)
        }),
        "{actions:?}"
    );
}

#[test]
fn rfc5626_4_4_1_missing_pong_fails_the_flow_and_it_is_replaced_at_once() {
    let t0 = Instant::now();
    let mut m = manager(1, 1, FixedRng::lowest());
    m.start(t0);
    let (flow, _) = connect_of(&drain(&mut m)).unwrap();
    bring_up(&mut m, t0, flow);
    // First ping at 80 % of 120 s.
    assert_eq!(m.poll_timeout(), Some(t0 + Duration::from_secs(96)));
    let t = t0 + Duration::from_secs(96);
    m.handle_timeout(t);
    assert_eq!(
        drain(&mut m),
        [FlowAction::SendKeepAlive {
            flow,
            payload: b"\r\n\r\n".to_vec()
        }]
    );
    // A pong in time: the next ping 96 s later.
    m.handle_pong(t + Duration::from_millis(300), flow);
    let t = t + Duration::from_millis(300) + Duration::from_secs(96);
    assert_eq!(m.poll_timeout(), Some(t));
    m.handle_timeout(t);
    assert!(matches!(
        drain(&mut m)[..],
        [FlowAction::SendKeepAlive { .. }]
    ));
    // No pong: failed after 10 s, and replaced on the same proxy without
    // waiting, since the flow had been up.
    assert_eq!(m.poll_timeout(), Some(t + Duration::from_secs(10)));
    m.handle_timeout(t + Duration::from_secs(10));
    let actions = drain(&mut m);
    assert_eq!(actions[0], FlowAction::Close { flow });
    assert!(matches!(
        actions[1],
        FlowAction::FlowFailed {
            reason: FlowFailure::PongTimeout,
            ..
        }
    ));
    let (replacement, proxy) = connect_of(&actions).unwrap();
    assert_ne!(replacement, flow);
    assert_eq!(proxy, 0);
    assert_eq!(m.proxy_failures(), [0]);
    // News about the old flow is ignored.
    m.handle_closed(t + Duration::from_secs(11), flow);
    assert!(drain(&mut m).is_empty());
}

/// One flow up at `t0`, its REGISTER answered with `flow_timer`.
fn up_with_flow_timer(flow_timer: Duration) -> (FlowManager<FixedRng>, FlowId, Instant) {
    let t0 = Instant::now();
    let mut m = manager(1, 1, FixedRng::highest());
    m.start(t0);
    let (flow, _) = connect_of(&drain(&mut m)).unwrap();
    m.handle_connected(t0, flow);
    let _ = drain(&mut m);
    m.handle_registered(t0, flow, Some(flow_timer));
    let _ = drain(&mut m);
    (m, flow, t0)
}

#[test]
fn rfc5626_4_4_1_flow_timer_sets_the_keepalive_interval() {
    let (m, _, t0) = up_with_flow_timer(Duration::from_secs(30));
    assert_eq!(m.poll_timeout(), Some(t0 + Duration::from_secs(30)));
}

/// A Flow-Timer far beyond anything sensible (a broken or hostile relay)
/// is capped at a day instead of overflowing the clock: refreshes too.
#[test]
fn rfc5626_4_4_1_a_huge_flow_timer_is_capped() {
    let (mut m, flow, t0) = up_with_flow_timer(Duration::from_secs(u64::MAX));
    assert_eq!(m.poll_timeout(), Some(t0 + MAX_FLOW_TIMER));
    m.handle_registered(t0, flow, Some(Duration::MAX));
    let response = sip_core::Message::parse(bytes::Bytes::from_static(
        b"SIP/2.0 200 OK\r\nVia: SIP/2.0/TLS 127.0.0.1:5061;branch=z9hG4bK1\r\n\
          From: <sip:a@example.com>;tag=1\r\nTo: <sip:a@example.com>;tag=2\r\n\
          Call-ID: c\r\nCSeq: 1 REGISTER\r\nFlow-Timer: 18446744073709551615\r\n\
          Content-Length: 0\r\n\r\n",
    ))
    .unwrap();
    assert_eq!(flow_timer(&response), Some(MAX_FLOW_TIMER));
}

#[test]
fn rfc5626_4_4_2_stun_keepalive_on_udp_and_nat_rebinding_fails_the_flow() {
    let t0 = Instant::now();
    let mut m = FlowManager::new(
        OutboundConfig::new(proxies(1, Transport::Udp)),
        FixedRng::lowest(),
    )
    .unwrap();
    m.start(t0);
    let (flow, _) = connect_of(&drain(&mut m)).unwrap();
    bring_up(&mut m, t0, flow);
    let mut t = t0 + Duration::from_secs(24); // 80 % of 30 s
    assert_eq!(m.poll_timeout(), Some(t));
    let answer = |m: &mut FlowManager<FixedRng>, t: Instant, mapped: &str| {
        m.handle_timeout(t);
        let ping = match &drain(m)[..] {
            [FlowAction::SendKeepAlive { payload, .. }] => payload.clone(),
            other => panic!("{other:?}"),
        };
        let request = StunMessage::decode(&ping).unwrap();
        assert_eq!(
            (request.class, request.method),
            (Class::Request, Method::BINDING)
        );
        let response = StunMessage::new(Class::Success, Method::BINDING, request.transaction_id)
            .with(Attribute::XorMappedAddress(mapped.parse().unwrap()))
            .encode(None, true);
        // A response to another transaction is not our pong.
        let stray = StunMessage::new(
            Class::Success,
            Method::BINDING,
            proxy_client::stun::TransactionId([9; 12]),
        )
        .encode(None, true);
        assert!(!m.handle_stun(t, flow, &stray));
        assert!(m.handle_stun(t, flow, &response));
    };
    answer(&mut m, t, "203.0.113.5:40000");
    assert!(drain(&mut m).is_empty());
    t += Duration::from_secs(24);
    assert_eq!(m.poll_timeout(), Some(t));
    answer(&mut m, t, "203.0.113.5:40001");
    let actions = drain(&mut m);
    assert!(actions.iter().any(|a| matches!(
        a,
        FlowAction::FlowFailed {
            reason: FlowFailure::MappedAddressChanged,
            ..
        }
    )));
    assert!(connect_of(&actions).is_some(), "a new flow is formed");
}

#[test]
fn rfc5626_4_5_503_retry_after_lengthens_the_wait_and_setup_timeout_counts() {
    let t0 = Instant::now();
    let mut m = manager(1, 1, FixedRng::lowest());
    m.start(t0);
    let (flow, _) = connect_of(&drain(&mut m)).unwrap();
    m.handle_connected(t0, flow);
    let _ = drain(&mut m);
    m.handle_registration_failed(t0, flow, 503, Some(Duration::from_secs(600)));
    let actions = drain(&mut m);
    assert!(actions.contains(&FlowAction::BackingOff {
        reg_id: 1,
        until: t0 + Duration::from_secs(600)
    }));
    // The next attempt hangs: the setup timeout fails it after 40 s.
    let t = t0 + Duration::from_secs(600);
    m.handle_timeout(t);
    let (flow, _) = connect_of(&drain(&mut m)).unwrap();
    assert_eq!(m.poll_timeout(), Some(t + Duration::from_secs(40)));
    m.handle_timeout(t + Duration::from_secs(40));
    let actions = drain(&mut m);
    assert!(actions.contains(&FlowAction::FlowFailed {
        flow,
        reg_id: 1,
        proxy: 0,
        reason: FlowFailure::SetupTimeout
    }));
    // Second failure: 50 % of 30 * 4.
    assert!(actions.contains(&FlowAction::BackingOff {
        reg_id: 1,
        until: t + Duration::from_secs(40 + 60)
    }));
    // A Retry-After of a day is held to the back-off's longest, 1800 s.
    let t = t + Duration::from_secs(100);
    m.handle_timeout(t);
    let (flow, _) = connect_of(&drain(&mut m)).unwrap();
    m.handle_connected(t, flow);
    let _ = drain(&mut m);
    m.handle_registration_failed(t, flow, 503, Some(Duration::from_secs(86_400)));
    assert!(drain(&mut m).contains(&FlowAction::BackingOff {
        reg_id: 1,
        until: t + Duration::from_secs(1800)
    }));
}

/// A push wake on a flow whose connection died in sleep without a FIN:
/// the REGISTER goes, and a keep-alive with it, whose missing pong fails
/// the flow after the pong timeout (10 s) and forms a new one, instead of
/// waiting 32 s for the REGISTER to time out.
#[test]
fn rfc8599_a_push_wake_checks_the_flow_with_a_keepalive() {
    let t0 = Instant::now();
    let mut m = manager(1, 1, FixedRng::highest());
    m.start(t0);
    let (flow, _) = connect_of(&drain(&mut m)).unwrap();
    bring_up(&mut m, t0, flow);
    let woken = t0 + Duration::from_secs(20);
    m.wake(woken);
    let actions = drain(&mut m);
    assert!(
        actions
            .iter()
            .any(|a| matches!(a, FlowAction::Register { flow: f, .. } if *f == flow)),
        "{actions:?}"
    );
    assert_eq!(m.poll_timeout(), Some(woken));
    m.handle_timeout(woken);
    let actions = drain(&mut m);
    assert!(
        actions
            .iter()
            .any(|a| matches!(a, FlowAction::SendKeepAlive { flow: f, .. } if *f == flow)),
        "{actions:?}"
    );
    // No pong: the flow fails 10 s on and a new one connects.
    let silent = woken + Duration::from_secs(10);
    assert_eq!(m.poll_timeout(), Some(silent));
    m.handle_timeout(silent);
    let actions = drain(&mut m);
    assert!(
        actions.iter().any(|a| matches!(
            a,
            FlowAction::FlowFailed {
                reason: FlowFailure::PongTimeout,
                ..
            }
        )),
        "{actions:?}"
    );
    assert!(connect_of(&actions).is_some(), "{actions:?}");
}

#[test]
fn proxy_restart_recovers_and_a_push_wake_skips_the_back_off() {
    let t0 = Instant::now();
    let mut m = manager(1, 1, FixedRng::highest());
    m.start(t0);
    let (flow, _) = connect_of(&drain(&mut m)).unwrap();
    bring_up(&mut m, t0, flow);
    // The proxy restarts: the connection closes, and inside the 30 s
    // recovery window refused connects are retried after 0.5, 1, 2, 4, 4 ...
    // s (100 % of each with this RNG) without counting as failures.
    let closed = t0 + Duration::from_secs(5);
    m.handle_closed(closed, flow);
    let mut t = closed;
    let mut waits = Vec::new();
    let (mut attempt, _) = connect_of(&drain(&mut m)).unwrap();
    let backed_off_until = loop {
        m.handle_connect_failed(t, attempt);
        let actions = drain(&mut m);
        let until = actions
            .iter()
            .find_map(|a| match a {
                FlowAction::BackingOff { until, .. } => Some(*until),
                _ => None,
            })
            .unwrap();
        if m.proxy_failures() != [0] {
            break until - t;
        }
        waits.push(until - t);
        assert_eq!(m.poll_timeout(), Some(until));
        t = until;
        m.handle_timeout(t);
        attempt = connect_of(&drain(&mut m)).unwrap().0;
        assert!(waits.len() < 20, "the window ends");
    };
    let ms = |v: u64| Duration::from_millis(v);
    assert_eq!(
        waits,
        [500, 1000, 2000, 4000, 4000, 4000, 4000, 4000, 4000, 4000].map(ms)
    );
    assert!(t - closed >= Duration::from_secs(30));
    // Past the window the refused connect counts: 100 % of 30 * 2.
    assert_eq!(m.proxy_failures(), [1]);
    assert_eq!(backed_off_until, Duration::from_secs(60));
    // A push notification wakes the app: try now, not in 60 s.
    let t = t + Duration::from_secs(1);
    m.wake(t);
    let (woken, _) = connect_of(&drain(&mut m)).unwrap();
    let up = bring_up(&mut m, t, woken);
    assert!(matches!(up[..], [FlowAction::FlowUp { .. }]));
    assert_eq!(m.proxy_failures(), [0], "success resets the count");
    // Woken again while up: a fast re-registration on the live flow.
    m.wake(t + Duration::from_secs(1));
    assert_eq!(
        drain(&mut m),
        [FlowAction::Register {
            flow: woken,
            reg_id: 1
        }]
    );
    m.reregister();
    assert_eq!(
        drain(&mut m),
        [FlowAction::Register {
            flow: woken,
            reg_id: 1
        }]
    );
    m.stop();
    assert_eq!(drain(&mut m), [FlowAction::Close { flow: woken }]);
    assert_eq!(m.poll_timeout(), None);
}

#[test]
fn a_relay_back_within_the_window_is_used_at_once_and_a_register_failure_still_counts() {
    let t0 = Instant::now();
    let mut m = manager(1, 1, FixedRng::lowest());
    m.start(t0);
    let (flow, _) = connect_of(&drain(&mut m)).unwrap();
    bring_up(&mut m, t0, flow);
    m.handle_closed(t0, flow);
    let (refused, _) = connect_of(&drain(&mut m)).unwrap();
    m.handle_connect_failed(t0, refused);
    // 50 % of the first 0.5 s step with this RNG.
    assert_eq!(m.poll_timeout(), Some(t0 + Duration::from_millis(250)));
    let t = t0 + Duration::from_millis(250);
    m.handle_timeout(t);
    let (again, _) = connect_of(&drain(&mut m)).unwrap();
    // Connected, but the REGISTER is refused: that counts (§4.5), window or not.
    m.handle_connected(t, again);
    drain(&mut m);
    m.handle_registration_failed(t, again, 503, None);
    let actions = drain(&mut m);
    assert!(actions.contains(&FlowAction::BackingOff {
        reg_id: 1,
        until: t + Duration::from_secs(30)
    }));
    assert_eq!(m.proxy_failures(), [1]);
}

#[test]
fn a_refused_reconnect_fails_over_at_once_when_another_proxy_is_eligible() {
    let t0 = Instant::now();
    let mut m = manager(2, 1, FixedRng::highest());
    m.start(t0);
    let (flow, proxy) = connect_of(&drain(&mut m)).unwrap();
    assert_eq!(proxy, 0);
    bring_up(&mut m, t0, flow);
    m.handle_closed(t0, flow);
    let (again, proxy) = connect_of(&drain(&mut m)).unwrap();
    assert_eq!(proxy, 0, "the same proxy first");
    m.handle_connect_failed(t0, again);
    let (next, proxy) = connect_of(&drain(&mut m)).unwrap();
    assert_eq!(proxy, 1, "no retry in the window while proxy 2 can be used");
    assert_eq!(m.proxy_failures(), [1, 0]);
    bring_up(&mut m, t0, next);
    assert!(m.is_up());
}

#[test]
fn contact_parameters_for_an_outbound_registration() {
    let instance =
        proxy_client::InstanceId::parse("urn:uuid:00000000-0000-1000-8000-000a95a0e128").unwrap();
    assert_eq!(
        proxy_client::outbound::contact_params(&instance, 1),
        ";+sip.instance=\"<urn:uuid:00000000-0000-1000-8000-000a95a0e128>\";reg-id=1"
    );
    assert_eq!(
        proxy_client::outbound::contact_uri(
            "alice",
            "192.0.2.4:40312".parse().unwrap(),
            Transport::Tls,
            ";pn-provider=fcm;pn-prid=t"
        ),
        "sip:alice@192.0.2.4:40312;transport=tls;ob;pn-provider=fcm;pn-prid=t"
    );
}

/// A relay that accepts, lets the REGISTER through and closes each
/// connection right after the 200: the first loss is replaced at once, as
/// a restart would be; from the second in a row the REGISTERs come at the
/// §4.5 back-off (60, 120, 240 s with this RNG), not in a loop.
#[test]
fn rfc5626_4_5_a_flow_that_closes_right_after_registering_backs_off() {
    let t0 = Instant::now();
    let mut m = manager(1, 1, FixedRng::highest());
    m.start(t0);
    let mut t = t0;
    let mut flow = connect_of(&drain(&mut m)).unwrap().0;
    let mut waits = Vec::new();
    for _ in 0..4 {
        bring_up(&mut m, t, flow);
        t += Duration::from_secs(1);
        m.handle_closed(t, flow);
        let actions = drain(&mut m);
        let until = actions.iter().find_map(|a| match a {
            FlowAction::BackingOff { until, .. } => Some(*until),
            _ => None,
        });
        match until {
            Some(until) => {
                waits.push((until - t).as_secs());
                t = until;
                m.handle_timeout(t);
                flow = connect_of(&drain(&mut m)).unwrap().0;
            }
            None => {
                waits.push(0);
                flow = connect_of(&actions).unwrap().0;
            }
        }
    }
    assert_eq!(waits, [0, 60, 120, 240]);
    assert_eq!(m.proxy_failures(), [3]);
    // A flow that stays up past `min_uptime` ends the run: its loss, and
    // the next short-lived one, are replaced at once.
    bring_up(&mut m, t, flow);
    assert_eq!(m.proxy_failures(), [0]);
    t += Duration::from_secs(31);
    m.handle_closed(t, flow);
    let flow = connect_of(&drain(&mut m)).unwrap().0;
    bring_up(&mut m, t, flow);
    m.handle_closed(t + Duration::from_secs(1), flow);
    assert!(connect_of(&drain(&mut m)).is_some());
}
