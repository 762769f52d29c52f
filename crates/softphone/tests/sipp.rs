//! The softphone against sipp: early media (183 with SDP) before the
//! answer, a 200 that comes again after our ACK, a session timer asked
//! for by a proxy on behalf of a caller without timer support, a hang-up
//! while a challenge is on its way, a refused hold, a re-INVITE without
//! SDP whose answer comes in the ACK, a hold by UPDATE, and an INVITE
//! without SDP, answered in the ACK or not at all, one whose body is not
//! SDP, a forked call answered by another callee than its early media's,
//! a stale ACK between a re-INVITE's 200 and its own ACK, an offer in a
//! multipart body, one that requires 100rel, early-dialog UPDATE and BYE
//! from a caller, a CANCEL for a call answered elsewhere, a shutdown while
//! a call rings, and a 491 on hold followed by a resume.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a failed interop step should fail loudly"
)]

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::time::Duration;

use config_export::{Account, Config, SrtpPolicy};
use softphone::{
    AudioSetup, CallRecord, CallState, EndReason, Events, Phone, PhoneConfig, PhoneEvent,
};
use testkit::{Scenario, Sipp, SippOutcome, SippRun};
use tokio::time::{Instant, timeout_at};

/// A phone on loopback with one account, PCMU in the clear, no device and
/// no registration.
async fn phone(user: &str) -> (Phone, Events) {
    let mut c = Config::default();
    c.accounts.push(Account::new(user, user, "sip:127.0.0.1"));
    c.media.codecs = vec!["PCMU".into()];
    c.media.srtp = SrtpPolicy::Off;
    let mut pc = PhoneConfig::new(c);
    pc.bind = IpAddr::V4(Ipv4Addr::LOCALHOST);
    pc.register = false;
    pc.audio = AudioSetup::Null;
    Phone::start(pc).await.unwrap()
}

/// sipp with one of this crate's scenarios, RTP echoed on two free ports.
fn sipp(file: &str) -> Sipp {
    let scenario = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(file);
    let media_port = testkit::free_udp_range(2).unwrap();
    Sipp::new(Scenario::File(scenario))
        .with_media(*media_port.start(), true)
        .with_calls(1)
        .with_timeout(Duration::from_secs(30))
}

/// The call states until the call ends or 20 s pass, hold asked for once
/// connected when `hold` is set, an incoming call answered.
async fn call_states(events: &mut Events, hold: Option<&softphone::Call>) -> Vec<CallState> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut states = Vec::new();
    while let Ok(Some(event)) = timeout_at(deadline, events.next()).await {
        match event {
            PhoneEvent::IncomingCall { call, .. } => call.answer().await.unwrap(),
            PhoneEvent::CallState { state, .. } => {
                if state == CallState::Connected
                    && let Some(call) = hold
                {
                    call.hold().await.unwrap();
                }
                let ended = matches!(state, CallState::Ended(_));
                states.push(state);
                if ended {
                    break;
                }
            }
            _ => {}
        }
    }
    states
}

/// Waits for sipp and fails with its log unless every call passed.
fn sipp_passed(run: SippRun) -> SippOutcome {
    let outcome = run.wait().unwrap();
    assert!(
        outcome.status.success(),
        "{}\n{}",
        outcome.log_tail,
        outcome.errors
    );
    outcome
}

/// Dials sipp's callee scenario `file` and returns the call's states.
async fn dial_sipp(file: &str, hold: bool) -> Vec<CallState> {
    let run = sipp(file)
        .with_call_duration(Duration::from_secs(1))
        .spawn()
        .unwrap();
    let (phone, mut events) = phone("alice").await;
    let call = phone
        .dial(None, &format!("sip:service@{}", run.addr()))
        .await
        .unwrap();
    let states = call_states(&mut events, hold.then_some(&call)).await;
    sipp_passed(run);
    phone.shutdown().await.unwrap();
    states
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn early_media_flows_before_the_answer() {
    let run = sipp("uas_early_media.xml")
        .with_call_duration(Duration::from_secs(2))
        .spawn()
        .unwrap();
    let (phone, mut events) = phone("alice").await;
    let call = phone
        .dial(None, &format!("sip:service@{}", run.addr()))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut states = Vec::new();
    let mut early_packets = 0;
    loop {
        let ev = timeout_at(deadline, events.next()).await.unwrap().unwrap();
        if let PhoneEvent::CallState { state, .. } = ev {
            if state == CallState::Connected {
                // Media ran to the 183's address before the answer. (sipp's
                // echo returns our own SSRC, which RTP rightly refuses as a
                // collision, so what we sent is the measure.)
                early_packets = call
                    .info()
                    .await
                    .unwrap()
                    .quality
                    .map_or(0, |q| q.packets_sent);
            }
            let ended = matches!(state, CallState::Ended(_));
            states.push(state);
            if ended {
                break;
            }
        }
    }
    assert_eq!(
        states,
        vec![
            CallState::Dialing,
            CallState::EarlyMedia,
            CallState::Connected,
            CallState::Ended(EndReason::RemoteHangup)
        ]
    );
    assert!(
        early_packets >= 40,
        "only {early_packets} RTP packets went out during 1.5 s of early media"
    );
    sipp_passed(run);
    phone.shutdown().await.unwrap();
}

/// A gateway's announcement before the answer comes with a sendonly SDP
/// in the 183 (we only listen), and the 200 that follows says sendrecv:
/// that answer is the one that counts (RFC 3261 §13.2.1: without 100rel
/// the early one was provisional), so we send once answered. The phone
/// used to keep the early answer, and the callee never heard the caller.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_answer_in_the_200_replaces_a_sendonly_announcements() {
    let run = sipp("uas_announcement_then_answer.xml")
        .with_call_duration(Duration::from_secs(3))
        .spawn()
        .unwrap();
    let (phone, mut events) = phone("alice").await;
    let call = phone
        .dial(None, &format!("sip:service@{}", run.addr()))
        .await
        .unwrap();
    let sent = |call: &softphone::Call| {
        let call = call.clone();
        async move {
            call.info()
                .await
                .ok()
                .and_then(|i| i.quality)
                .map_or(0, |q| q.packets_sent)
        }
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    let early = loop {
        let ev = timeout_at(deadline, events.next()).await.unwrap().unwrap();
        if let PhoneEvent::CallState {
            state: CallState::Connected,
            ..
        } = ev
        {
            break sent(&call).await;
        }
    };
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let answered = sent(&call).await;
    assert!(
        early < 10,
        "{early} RTP packets went out while only listening"
    );
    assert!(
        answered >= early + 40,
        "only {} RTP packets went out in 1.5 s after the answer",
        answered - early
    );
    let states = call_states(&mut events, None).await;
    assert_eq!(
        states.last(),
        Some(&CallState::Ended(EndReason::RemoteHangup))
    );
    sipp_passed(run);
    phone.shutdown().await.unwrap();
}

/// RFC 3261 §13.2.2.4: every 2xx to the INVITE gets an ACK, also the same
/// 200 arriving again after the first ACK (the callee did not see it; sipp
/// waits for a second ACK before its BYE).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_200_that_comes_again_is_acknowledged_again() {
    let states = dial_sipp("uas_resends_200.xml", false).await;
    assert_eq!(
        states.last(),
        Some(&CallState::Ended(EndReason::RemoteHangup))
    );
}

/// RFC 4028 §9: a Session-Expires in an INVITE whose sender does not list
/// `timer` in Supported (a proxy added it) makes us the refresher, and our
/// 200 does not require timers of the caller. sipp checks both on the 200.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_without_timer_support_is_not_made_the_refresher() {
    let (phone, mut events) = phone("bob").await;
    let bob = phone.accounts().await.unwrap()[0].local.unwrap();
    let run = sipp("uac_session_expires_unsupported.xml")
        .with_remote(bob)
        .with_service("bob")
        .with_call_duration(Duration::from_secs(1))
        .spawn()
        .unwrap();
    let states = call_states(&mut events, None).await;
    sipp_passed(run);
    assert_eq!(
        states.last(),
        Some(&CallState::Ended(EndReason::RemoteHangup))
    );
    phone.shutdown().await.unwrap();
}

/// Hanging up before a slow 407 arrives ends the call there: no INVITE
/// with credentials follows, so the callee never rings (sipp fails on an
/// unexpected INVITE).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hanging_up_before_a_challenge_sends_no_second_invite() {
    let run = sipp("uas_slow_challenge.xml").spawn().unwrap();
    let (phone, mut events) = phone("alice").await;
    let call = phone
        .dial(None, &format!("sip:service@{}", run.addr()))
        .await
        .unwrap();
    call.hangup().await.unwrap();
    let states = call_states(&mut events, None).await;
    sipp_passed(run);
    assert_eq!(states.last(), Some(&CallState::Ended(EndReason::Cancelled)));
    phone.shutdown().await.unwrap();
}

/// A hold the callee refuses (488) leaves the call off hold: its next
/// offer of sendrecv is answered sendrecv, not with the refused hold's
/// sendonly. sipp checks the answer's direction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_hold_leaves_the_call_off_hold() {
    let states = dial_sipp("uas_refuses_hold.xml", true).await;
    assert_eq!(
        states.last(),
        Some(&CallState::Ended(EndReason::RemoteHangup))
    );
}

/// A 200 to our hold whose answer we cannot use (a codec we did not
/// offer): the peer took the hold, we did not, so we offer the call's
/// media again (sipp checks it is sendrecv) and the call goes on, never
/// shown on hold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unusable_answer_to_a_hold_is_followed_by_a_new_offer() {
    let states = dial_sipp("uas_unusable_hold_answer.xml", true).await;
    assert_eq!(
        states,
        [
            CallState::Dialing,
            CallState::Connected,
            CallState::Ended(EndReason::RemoteHangup)
        ]
    );
}

/// When the answer to that new offer is unusable too, the session cannot
/// go on: we hang up (sipp expects the BYE) and say why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unusable_answers_to_two_offers_in_a_row_end_the_call() {
    let states = dial_sipp("uas_unusable_answers.xml", true).await;
    assert!(
        matches!(states.last(), Some(CallState::Ended(EndReason::Failed(why))) if why.contains("unusable")),
        "{states:?}"
    );
}

/// RFC 3264 with RFC 3261 §13.2.1: a re-INVITE without SDP gets our offer
/// in the 200, and the answer in the ACK applies: here `inactive`, which
/// puts the call on hold from the far side.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_answer_in_an_ack_applies() {
    let states = dial_sipp("uas_offerless_reinvite.xml", false).await;
    assert_held_by_the_peer_then_hung_up(&states);
}

/// RFC 3311 §5.2: an UPDATE with an offer gets its answer in the 200 and
/// the media follows it: sendonly from the peer is answered recvonly (sipp
/// checks), and the call is on hold from the far side.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_with_an_offer_is_answered() {
    let states = dial_sipp("uas_update_hold.xml", false).await;
    assert!(states.contains(&HELD_BY_THE_PEER), "{states:?}");
}

/// On hold from the far side only.
const HELD_BY_THE_PEER: CallState = CallState::OnHold {
    local: false,
    remote: true,
};

/// The far side put the call on hold at some point and hung up at the end.
fn assert_held_by_the_peer_then_hung_up(states: &[CallState]) {
    assert!(states.contains(&HELD_BY_THE_PEER), "{states:?}");
    assert_eq!(
        states.last(),
        Some(&CallState::Ended(EndReason::RemoteHangup))
    );
}

/// An answered call that the caller hung up after about 2 s of media:
/// `sent` RTP packets went out, 50 a second.
fn assert_talked_then_hung_up(states: &[CallState], sent: u64) {
    assert_eq!(
        states,
        [
            CallState::Connected,
            CallState::Ended(EndReason::RemoteHangup)
        ]
    );
    assert!(sent >= 50, "only {sent} RTP packets went out in 2 s");
}

/// The call's states until it ends or 20 s pass, and the RTP packets sent
/// by its last quality report (0 without one); an incoming call is
/// answered when `answer` is set.
async fn states_and_sent(events: &mut Events, answer: bool) -> (Vec<CallState>, u64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut states = Vec::new();
    let mut sent = 0;
    while let Ok(Some(event)) = timeout_at(deadline, events.next()).await {
        match event {
            PhoneEvent::IncomingCall { call, .. } if answer => call.answer().await.unwrap(),
            PhoneEvent::Quality { report, .. } => sent = report.packets_sent,
            PhoneEvent::CallState { state, .. } => {
                let ended = matches!(state, CallState::Ended(_));
                states.push(state);
                if ended {
                    break;
                }
            }
            _ => {}
        }
    }
    (states, sent)
}

/// Answers the INVITE sipp's caller scenario `file` sends and returns the
/// call's states and, from the final quality report, the RTP packets sent.
async fn answer_sipp(file: &str) -> (Vec<CallState>, u64) {
    let (phone, mut events) = phone("bob").await;
    let bob = phone.accounts().await.unwrap()[0].local.unwrap();
    let run = sipp(file)
        .with_remote(bob)
        .with_service("bob")
        .with_call_duration(Duration::from_secs(2))
        .spawn()
        .unwrap();
    let (states, sent) = states_and_sent(&mut events, true).await;
    sipp_passed(run);
    phone.shutdown().await.unwrap();
    (states, sent)
}

/// RFC 3261 §13.2.1: an INVITE without SDP gets our offer in the 200 (sipp
/// checks it), and media starts with the answer in the ACK.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invite_without_an_offer_gets_one_and_media_follows_the_ack() {
    let (states, sent) = answer_sipp("uac_offerless_invite.xml").await;
    assert_talked_then_hung_up(&states, sent);
}

/// An ACK without an answer to our offer leaves a call without a session:
/// we end it with BYE (sipp waits for it) and say why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ack_without_the_answer_ends_the_call() {
    let (states, sent) = answer_sipp("uac_offerless_invite_no_answer.xml").await;
    match states.last() {
        Some(CallState::Ended(EndReason::Failed(why))) => {
            assert!(why.contains("no answer in the ACK"), "{why}");
        }
        other => panic!("the call did not fail: {other:?} in {states:?}"),
    }
    assert_eq!(sent, 0, "RTP went out without a negotiated session");
}

/// RFC 3261 §8.2.3: an INVITE whose body is not SDP is refused with 415
/// and an Accept header naming SDP (sipp checks both), and never rings.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invite_with_a_body_that_is_not_sdp_gets_415() {
    refused_without_ringing("uac_non_sdp_body.xml").await;
}

/// RFC 3261 §8.2.2.3: an INVITE that requires an extension we lack
/// (100rel) gets 420 with the tag in Unsupported (sipp checks it), and
/// never rings.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invite_requiring_100rel_gets_420() {
    refused_without_ringing("uac_require_100rel.xml").await;
}

/// Runs sipp's caller scenario `file`, which checks how the INVITE was
/// refused, and asserts the phone never rang.
async fn refused_without_ringing(file: &str) {
    let (phone, mut events) = phone("bob").await;
    let bob = phone.accounts().await.unwrap()[0].local.unwrap();
    let run = sipp(file)
        .with_remote(bob)
        .with_service("bob")
        .spawn()
        .unwrap();
    tokio::task::spawn_blocking(move || sipp_passed(run))
        .await
        .unwrap();
    while let Ok(Some(event)) =
        tokio::time::timeout(Duration::from_millis(300), events.next()).await
    {
        assert!(
            !matches!(
                event,
                PhoneEvent::IncomingCall { .. } | PhoneEvent::CallState { .. }
            ),
            "{event:?}"
        );
    }
    phone.shutdown().await.unwrap();
}

/// RFC 3261 §13.2.2.4: a forked INVITE gets early media from one callee
/// and the 200 from another. Media goes to the first, then follows the
/// second's answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_follows_the_callee_that_answers_a_forked_call() {
    let early = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let answered = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let port = |s: &tokio::net::UdpSocket| s.local_addr().unwrap().port().to_string();
    let run = sipp("uas_forked_answer.xml")
        .with_key("early_port", &port(&early))
        .with_key("final_port", &port(&answered))
        .with_call_duration(Duration::from_secs(2))
        .spawn()
        .unwrap();
    let (phone, mut events) = phone("alice").await;
    let call = phone
        .dial(None, &format!("sip:service@{}", run.addr()))
        .await
        .unwrap();
    let mut buf = [0u8; 2048];
    let first = tokio::time::timeout(Duration::from_secs(10), early.recv_from(&mut buf)).await;
    assert!(first.is_ok(), "no early media reached the first callee");
    let states = call_states(&mut events, None).await;
    assert_eq!(
        states,
        vec![
            CallState::Dialing,
            CallState::EarlyMedia,
            CallState::Connected,
            CallState::Ended(EndReason::RemoteHangup)
        ]
    );
    // The call ran about 2 s after the answer: RTP for all of it went to
    // the callee that answered.
    let mut packets = 0;
    while let Ok(Ok(_)) =
        tokio::time::timeout(Duration::from_millis(200), answered.recv_from(&mut buf)).await
    {
        packets += 1;
    }
    assert!(
        packets >= 50,
        "only {packets} RTP packets reached the callee that answered"
    );
    drop(call);
    sipp_passed(run);
    phone.shutdown().await.unwrap();
}

/// RFC 3261 §13.2.2.4: the ACK of a re-INVITE's 200 has the re-INVITE's
/// CSeq. A repeated ACK of the first 200 (CSeq 1) arriving first is no
/// answer to the offer in the re-INVITE's 200; the right ACK's `inactive`
/// still puts the call on hold from the far side.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_ack_is_not_the_answer_to_a_re_invite() {
    let (states, _) = answer_sipp("uac_reinvite_stale_ack.xml").await;
    assert_held_by_the_peer_then_hung_up(&states);
}

/// RFC 5621: an offer in a multipart/mixed body beside ISUP, as gateways
/// send it, is answered from its SDP part (sipp checks the answer), and
/// media flows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offer_in_a_multipart_body_is_answered() {
    let (states, sent) = answer_sipp("uac_multipart_offer.xml").await;
    assert_talked_then_hung_up(&states, sent);
}

/// Lets sipp's caller scenario `file` ring the phone, never answered, and
/// asserts the call ended for `reason` without connecting and went into
/// the history as `recorded`; returns the RTP packets sent (from a final
/// quality report, 0 without one).
async fn ends_unanswered(file: &str, reason: EndReason, recorded: &str) -> u64 {
    let (states, sent, history) = ring_sipp(file).await;
    assert_eq!(states.last(), Some(&CallState::Ended(reason)), "{states:?}");
    assert!(!states.contains(&CallState::Connected), "{states:?}");
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].end_reason, recorded);
    sent
}

/// Lets sipp's caller scenario `file` ring the phone, never answered, and
/// returns the call's states, the RTP packets sent (from a final quality
/// report, 0 without one) and the call history.
async fn ring_sipp(file: &str) -> (Vec<CallState>, u64, Vec<CallRecord>) {
    let (phone, mut events) = phone("bob").await;
    let bob = phone.accounts().await.unwrap()[0].local.unwrap();
    let run = sipp(file)
        .with_remote(bob)
        .with_service("bob")
        .spawn()
        .unwrap();
    let (states, sent) = states_and_sent(&mut events, false).await;
    sipp_passed(run);
    let history = phone.history(5).await.unwrap();
    phone.shutdown().await.unwrap();
    (states, sent, history)
}

/// RFC 3311 §5.2: an UPDATE with an offer before we answered (the
/// INVITE's offer is unanswered on the wire) gets 500 with Retry-After
/// 0-10 (sipp checks both), and no media starts while the phone rings.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offer_before_the_answer_gets_500_and_starts_no_media() {
    let sent = ends_unanswered("uac_early_update.xml", EndReason::RemoteCancelled, "missed").await;
    assert_eq!(sent, 0, "RTP went out before the call was answered");
}

/// RFC 3261 §15.1.2: a caller's BYE in the early dialog ends the call, and
/// the INVITE still gets its 487 (sipp waits for it and ACKs it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bye_before_the_answer_gets_the_invite_a_487() {
    ends_unanswered("uac_early_bye.xml", EndReason::RemoteCancelled, "missed").await;
}

/// RFC 3326: a CANCEL with `Reason: SIP;cause=200` (another phone of the
/// group answered) is not a missed call, in the event or the history.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_answered_elsewhere_is_not_missed() {
    ends_unanswered(
        "uac_cancel_elsewhere.xml",
        EndReason::AnsweredElsewhere,
        "answered elsewhere",
    )
    .await;
}

/// Shutting down while an outgoing call rings cancels it and waits for the
/// 487 (sipp needs its ACK); the call ends as cancelled, not silently.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_while_ringing_cancels_the_call() {
    let run = sipp("uas_ring_then_cancel.xml").spawn().unwrap();
    let (phone, mut events) = phone("alice").await;
    phone
        .dial(None, &format!("sip:service@{}", run.addr()))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while let Ok(Some(event)) = timeout_at(deadline, events.next()).await {
        if let PhoneEvent::CallState {
            state: CallState::Ringing,
            ..
        } = event
        {
            break;
        }
    }
    phone.shutdown().await.unwrap();
    let mut ended = None;
    while let Ok(Some(event)) = timeout_at(deadline, events.next()).await {
        if let PhoneEvent::CallState {
            state: CallState::Ended(reason),
            ..
        } = event
        {
            ended = Some(reason);
        }
    }
    assert_eq!(ended, Some(EndReason::Cancelled));
    sipp_passed(run);
}

/// RFC 3261 §14.1: a hold refused with 491 is retried 2-4 s later, unless
/// the user resumed meanwhile: then the retry must not put the call back
/// on hold (sipp fails on any INVITE in its 5 s pause).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_after_a_491_on_hold_is_not_undone_by_the_retry() {
    let run = sipp("uas_glare_hold.xml").spawn().unwrap();
    let (phone, mut events) = phone("alice").await;
    let call = phone
        .dial(None, &format!("sip:service@{}", run.addr()))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(25);
    let mut states = Vec::new();
    let mut held = false;
    while let Ok(Some(event)) = timeout_at(deadline, events.next()).await {
        if let PhoneEvent::CallState { state, .. } = event {
            if state == CallState::Connected && !held {
                held = true;
                call.hold().await.unwrap();
                tokio::time::sleep(Duration::from_millis(300)).await;
                call.resume().await.unwrap();
            }
            let ended = matches!(state, CallState::Ended(_));
            states.push(state);
            if ended {
                break;
            }
        }
    }
    sipp_passed(run);
    phone.shutdown().await.unwrap();
    assert!(
        !states.iter().any(|s| matches!(s, CallState::OnHold { .. })),
        "{states:?}"
    );
    assert_eq!(
        states.last(),
        Some(&CallState::Ended(EndReason::RemoteHangup))
    );
}
