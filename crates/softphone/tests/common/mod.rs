//! What the phone's integration tests share: waiting for an event or a
//! call state with a deadline, tone files to play, and what a recording
//! hears.
#![allow(dead_code, reason = "each test binary uses some of these")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a failed step should fail loudly"
)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use media_audio::{Recording, analysis};
use softphone::{Call, CallState, Events, PhoneEvent};
use testkit::{Tone, write_tone};
use tokio::time::{Instant, timeout_at};

/// How long a test waits for one step.
pub(crate) const LIMIT: Duration = Duration::from_secs(15);

/// The next event `pred` accepts, within [`LIMIT`]; panics naming `what`
/// when it does not come.
pub(crate) async fn next_event(
    events: &mut Events,
    what: &str,
    pred: impl FnMut(&PhoneEvent) -> bool,
) -> PhoneEvent {
    next_event_within(events, what, LIMIT, pred).await
}

/// As [`next_event`], within `limit`.
pub(crate) async fn next_event_within(
    events: &mut Events,
    what: &str,
    limit: Duration,
    mut pred: impl FnMut(&PhoneEvent) -> bool,
) -> PhoneEvent {
    let deadline = Instant::now() + limit;
    loop {
        match timeout_at(deadline, events.next()).await {
            Err(_) => panic!("timed out waiting for {what}"),
            Ok(None) => panic!("the phone stopped while waiting for {what}"),
            Ok(Some(e)) if pred(&e) => return e,
            Ok(Some(_)) => {}
        }
    }
}

/// The next state `pred` accepts of `call` (of any call when `None`).
pub(crate) async fn call_state(
    events: &mut Events,
    call: Option<&Call>,
    what: &str,
    pred: impl Fn(&CallState) -> bool,
) -> CallState {
    let id = call.map(Call::id);
    match next_event(events, what, |e| {
        matches!(e, PhoneEvent::CallState { call, state }
            if id.is_none_or(|id| *call == id) && pred(state))
    })
    .await
    {
        PhoneEvent::CallState { state, .. } => state,
        _ => unreachable!(),
    }
}

/// An incoming call.
pub(crate) async fn incoming(events: &mut Events) -> Call {
    match next_event(events, "an incoming call", |e| {
        matches!(e, PhoneEvent::IncomingCall { .. })
    })
    .await
    {
        PhoneEvent::IncomingCall { call, .. } => call,
        _ => unreachable!(),
    }
}

/// A 10 s narrowband tone of `frequency` as `dir/name`.
pub(crate) fn tone_file(dir: &Path, name: &str, frequency: f64) -> PathBuf {
    let path = dir.join(name);
    let mut t = Tone::narrowband(frequency);
    t.duration = Duration::from_secs(10);
    write_tone(&path, &t).unwrap();
    path
}

/// The dominant frequency of the last half second `r` recorded.
pub(crate) fn heard_frequency(r: &Recording) -> Option<f64> {
    let rate = r.sample_rate().unwrap_or(8000);
    analysis::dominant_frequency(&r.latest(Duration::from_millis(500)), rate)
}

/// Whether `r` hears `frequency` now (within 2 %).
pub(crate) fn hears(r: &Recording, frequency: f64) -> bool {
    heard_frequency(r).is_some_and(|f| (f - frequency).abs() < frequency * 0.02)
}
