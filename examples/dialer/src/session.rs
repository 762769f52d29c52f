//! `call`, `answer`, `register` and `history`.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use softphone::{
    CallDirection, CallId, CallState, Events, History, Phone, PhoneEvent, QualityReport,
    RegistrationStatus,
};
use tokio::time::{Instant, sleep_until, timeout_at};

use crate::options::{AccountArgs, MediaArgs, UsageError, phone_config};

/// Waits for the account's registration to succeed or fail for good.
/// Waits for the registration's outcome; false on failure, silence or
/// Ctrl-C.
async fn wait_registered(
    events: &mut Events,
    limit: Duration,
    interrupt: &mut Interrupt,
) -> Result<bool> {
    let deadline = Instant::now() + limit;
    loop {
        let next = tokio::select! {
            next = timeout_at(deadline, events.next()) => next,
            () = interrupt.recv() => {
                println!("interrupted");
                return Ok(false);
            }
        };
        match next {
            Err(_) => {
                println!("registration: no answer within {} s", limit.as_secs());
                return Ok(false);
            }
            Ok(None) => return Ok(false),
            Ok(Some(PhoneEvent::Registration { status, .. })) => {
                print_registration(&status);
                match status {
                    RegistrationStatus::Registered { .. } => return Ok(true),
                    RegistrationStatus::Failed { .. } => return Ok(false),
                    _ => {}
                }
            }
            Ok(Some(_)) => {}
        }
    }
}

fn print_registration(status: &RegistrationStatus) {
    match status {
        RegistrationStatus::Registered { expires } => println!("registered (expires {expires} s)"),
        RegistrationStatus::Registering => println!("registering..."),
        RegistrationStatus::Unregistered => println!("unregistered"),
        RegistrationStatus::Failed {
            status,
            reason,
            will_retry,
        } => println!(
            "registration failed: {status} {reason}{}",
            if *will_retry { " (will retry)" } else { "" }
        ),
        _ => println!("registration: {status:?}"),
    }
}

fn print_quality(report: &QualityReport) {
    println!("quality: {report}");
}

fn clock(d: Duration) -> String {
    let s = d.as_secs();
    format!("{:02}:{:02}", s / 60, s % 60)
}

/// Ctrl-C, caught from the moment this is made (on Unix; elsewhere from the
/// first wait) rather than from the first wait, so one that comes while
/// starting is not lost to the default action, which would leave the
/// binding at the registrar.
pub(crate) struct Interrupt {
    #[cfg(unix)]
    signal: tokio::signal::unix::Signal,
    /// A Ctrl-C came.
    fired: bool,
}

impl Interrupt {
    pub(crate) fn new() -> Result<Self> {
        Ok(Self {
            #[cfg(unix)]
            signal: tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
                .context("listening for Ctrl-C")?,
            fired: false,
        })
    }

    /// The next Ctrl-C.
    pub(crate) async fn recv(&mut self) {
        #[cfg(unix)]
        let _ = self.signal.recv().await;
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
        self.fired = true;
    }
}

pub(crate) async fn call(
    profile: &Path,
    target: &str,
    account: &AccountArgs,
    media: &MediaArgs,
    hangup_after: Option<u64>,
    dtmf: Option<&str>,
    ring_timeout: u64,
) -> Result<bool> {
    // Checked before anything starts: a typo is a usage error (exit 2),
    // not a failed call after registering.
    if let Some(d) = dtmf
        && (d.is_empty()
            || !d
                .chars()
                .all(|c| media_engine::dtmf::Digit::from_char(c).is_some()))
    {
        anyhow::bail!(UsageError(format!(
            "--dtmf {d:?}: digits are 0-9, *, # and A-D"
        )));
    }
    let config = phone_config(profile, account, Some(media), false)?;
    let registering = config.register;
    let mut interrupt = Interrupt::new()?;
    let (phone, mut events) = Phone::start(config).await.context("starting the phone")?;
    if registering && !wait_registered(&mut events, Duration::from_secs(15), &mut interrupt).await?
    {
        let _ = phone.shutdown().await;
        return Ok(false);
    }
    let call = match phone.dial(None, target).await {
        Ok(call) => call,
        Err(e) => {
            // Un-register before leaving, whatever went wrong.
            let _ = tokio::time::timeout(Duration::from_secs(5), phone.shutdown()).await;
            if matches!(e, softphone::PhoneError::InvalidInput { .. }) {
                anyhow::bail!(UsageError(format!("{target:?}: {e}")));
            }
            return Err(e).context("dialing");
        }
    };
    println!("calling {target}");
    let ok = follow_call(
        &phone,
        &mut events,
        call.id(),
        hangup_after,
        dtmf,
        ring_timeout,
        &mut interrupt,
    )
    .await;
    let _ = tokio::time::timeout(Duration::from_secs(5), phone.shutdown()).await;
    Ok(ok)
}

/// Follows one call to its end: prints state changes and a running timer,
/// hangs up when told. True when it was answered and ended normally.
async fn follow_call(
    phone: &Phone,
    events: &mut Events,
    id: CallId,
    hangup_after: Option<u64>,
    dtmf: Option<&str>,
    ring_timeout: u64,
    interrupt: &mut Interrupt,
) -> bool {
    let call = phone.call(id);
    // Cleared once the call is answered or cancelled.
    let mut ring_deadline = Some(Instant::now() + Duration::from_secs(ring_timeout));
    let mut answered_at: Option<Instant> = None;
    let mut hangup_at: Option<Instant> = None;
    let mut next_tick = Instant::now() + Duration::from_secs(1);
    let mut last_quality: Option<QualityReport> = None;
    loop {
        let wake = [Some(next_tick), hangup_at, ring_deadline]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(next_tick);
        tokio::select! {
            ev = events.next() => {
                let Some(ev) = ev else { return false };
                match ev {
                    PhoneEvent::CallState { call: c, state } if c == id => match state {
                        CallState::Ringing => println!("ringing"),
                        CallState::EarlyMedia => println!("early media"),
                        CallState::Connected => {
                            if answered_at.is_none() {
                                println!("answered");
                                ring_deadline = None;
                                answered_at = Some(Instant::now());
                                hangup_at = hangup_after.map(|s| Instant::now() + Duration::from_secs(s));
                                if let Some(d) = dtmf
                                    && let Err(e) = call.send_dtmf(d).await
                                {
                                    println!("dtmf not sent: {e}");
                                }
                            } else {
                                println!("resumed");
                            }
                        }
                        CallState::OnHold { local, remote } => {
                            println!("on hold (by {})", match (local, remote) {
                                (true, true) => "both sides",
                                (true, false) => "us",
                                _ => "the far end",
                            });
                        }
                        CallState::Ended(reason) => {
                            let talk = answered_at.map(|a| a.elapsed()).unwrap_or_default();
                            println!("call ended: {} after {}", reason.as_text(), clock(talk));
                            // The final figures follow the end event.
                            while let Some(PhoneEvent::Quality { report, .. }) = events.try_next() {
                                last_quality = Some(report);
                            }
                            if let Some(q) = &last_quality {
                                print_quality(q);
                            }
                            return answered_at.is_some() && reason.is_normal();
                        }
                        _ => {}
                    },
                    PhoneEvent::Quality { call: c, report } if c == id => last_quality = Some(report),
                    PhoneEvent::Dtmf { call: c, digit } if c == id => println!("dtmf received: {digit}"),
                    PhoneEvent::Notice { text } => println!("notice: {text}"),
                    PhoneEvent::TransferProgress { status, .. } => println!("transfer: {status}"),
                    _ => {}
                }
            }
            // Ctrl-C hangs up; the caller's shutdown then un-registers and
            // writes the call to the history.
            () = interrupt.recv() => {
                println!("interrupted: hanging up");
                let _ = call.hangup().await;
                return false;
            }
            () = sleep_until(wake) => {
                let now = Instant::now();
                if hangup_at.is_some_and(|h| h <= now) {
                    hangup_at = None;
                    println!("hanging up");
                    if let Err(e) = call.hangup().await {
                        println!("hangup: {e}");
                    }
                }
                if ring_deadline.is_some_and(|d| d <= now) {
                    ring_deadline = None;
                    println!("no answer within {ring_timeout} s: cancelling");
                    let _ = call.hangup().await;
                }
                if next_tick <= now {
                    next_tick = now + Duration::from_secs(1);
                    if let Some(a) = answered_at {
                        println!("in call {}", clock(a.elapsed()));
                    }
                }
            }
        }
    }
}

pub(crate) async fn answer(
    profile: &Path,
    account: &AccountArgs,
    media: &MediaArgs,
    auto: bool,
    hangup_after: Option<u64>,
    max_calls: Option<u32>,
    duration: Option<u64>,
) -> Result<bool> {
    let config = phone_config(profile, account, Some(media), false)?;
    let registering = config.register;
    let mut interrupt = Interrupt::new()?;
    let (phone, mut events) = Phone::start(config).await.context("starting the phone")?;
    if registering && !wait_registered(&mut events, Duration::from_secs(15), &mut interrupt).await?
    {
        let _ = phone.shutdown().await;
        return Ok(false);
    }
    let accounts = phone.accounts().await?;
    if let Some(local) = accounts.first().and_then(|a| a.local) {
        println!("waiting for calls on {local}");
    }
    let stop_at = duration.map(|s| Instant::now() + Duration::from_secs(s));
    let mut ended = 0u32;
    let mut all_ok = true;
    let mut hangups: Vec<(Instant, CallId)> = Vec::new();
    // A re-check fetches documents for up to half a minute: beside the
    // loop, so calls are answered and hung up, and Ctrl-C works, meanwhile.
    let (rechecked_tx, mut rechecked) = tokio::sync::mpsc::unbounded_channel();
    let mut rechecking = false;
    // A request during a re-check may follow a change the re-check under
    // way fetched too early: one more runs after it.
    let mut again = false;
    let recheck = |done: tokio::sync::mpsc::UnboundedSender<_>| {
        let profile = profile.to_owned();
        tokio::spawn(async move {
            let _ = done.send(crate::profile::recheck(&profile).await);
        });
    };
    loop {
        let wake = hangups.iter().map(|(t, _)| *t).chain(stop_at).min();
        let ev = tokio::select! {
            ev = events.next() => ev,
            Some(result) = rechecked.recv() => {
                rechecking = std::mem::take(&mut again);
                if rechecking {
                    recheck(rechecked_tx.clone());
                }
                match result {
                    Ok(true) => println!("configuration re-checked; it applies to the next start"),
                    Ok(false) => println!("this profile was not provisioned: nothing to re-check"),
                    Err(e) => println!("re-check failed: {}", crate::options::describe(&e)),
                }
                continue;
            }
            // Ctrl-C ends the loop; the shutdown below hangs up,
            // un-registers and writes the calls to the history.
            () = interrupt.recv() => {
                println!("interrupted: stopping");
                all_ok = false;
                break;
            }
            () = sleep_until(wake.unwrap_or_else(Instant::now)), if wake.is_some() => {
                let now = Instant::now();
                let (due, later): (Vec<_>, Vec<_>) =
                    hangups.into_iter().partition(|(t, _)| *t <= now);
                hangups = later;
                for (_, id) in due {
                    println!("hanging up");
                    let _ = phone.call(id).hangup().await;
                }
                if stop_at.is_some_and(|s| s <= now) {
                    break;
                }
                continue;
            }
        };
        let Some(ev) = ev else { break };
        match ev {
            PhoneEvent::IncomingCall { call, from, .. } => {
                println!("incoming call from {}", from.user());
                if auto {
                    match call.answer().await {
                        Ok(()) => println!("answered"),
                        Err(e) => println!("answer failed: {e}"),
                    }
                }
            }
            PhoneEvent::CallState { call, state } => match state {
                CallState::Connected => {
                    if let Some(s) = hangup_after {
                        hangups.push((Instant::now() + Duration::from_secs(s), call));
                    }
                }
                CallState::Ended(reason) => {
                    println!("call ended: {}", reason.as_text());
                    all_ok &= reason.is_normal();
                    ended += 1;
                    hangups.retain(|(_, c)| *c != call);
                    if max_calls.is_some_and(|m| ended >= m) {
                        break;
                    }
                }
                _ => {}
            },
            PhoneEvent::Quality { report, .. } => print_quality(&report),
            PhoneEvent::Dtmf { digit, .. } => println!("dtmf received: {digit}"),
            PhoneEvent::Notice { text } => println!("notice: {text}"),
            PhoneEvent::CheckSync if rechecking => {
                println!(
                    "the PBX asks for a provisioning re-check: another follows the one under way"
                );
                again = true;
            }
            PhoneEvent::CheckSync => {
                println!("the PBX asks for a provisioning re-check");
                rechecking = true;
                recheck(rechecked_tx.clone());
            }
            PhoneEvent::Registration { status, .. } => print_registration(&status),
            _ => {}
        }
    }
    // Let the final events drain.
    while let Some(ev) = events.try_next() {
        if let PhoneEvent::Quality { report, .. } = ev {
            print_quality(&report);
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), phone.shutdown()).await;
    Ok(all_ok && ended > 0)
}

pub(crate) async fn register(
    profile: &Path,
    account: &AccountArgs,
    stay: Option<u64>,
) -> Result<bool> {
    let config = phone_config(profile, account, None, true)?;
    let mut interrupt = Interrupt::new()?;
    let (phone, mut events) = Phone::start(config).await.context("starting the phone")?;
    let mut ok = wait_registered(&mut events, Duration::from_secs(15), &mut interrupt).await?;
    if let Some(s) = stay.filter(|_| !interrupt.fired) {
        let deadline = Instant::now() + Duration::from_secs(s);
        // Ctrl-C ends the stay early; the shutdown below un-registers.
        loop {
            tokio::select! {
                ev = timeout_at(deadline, events.next()) => match ev {
                    Ok(Some(PhoneEvent::Registration { status, .. })) => print_registration(&status),
                    Ok(Some(_)) => {}
                    Ok(None) | Err(_) => break,
                },
                () = interrupt.recv() => {
                    println!("interrupted: un-registering");
                    break;
                }
            }
        }
        let accounts = phone.accounts().await?;
        ok = accounts
            .iter()
            .all(|a| matches!(a.status, RegistrationStatus::Registered { .. }));
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), phone.shutdown()).await;
    while let Some(ev) = events.try_next() {
        if let PhoneEvent::Registration { status, .. } = ev {
            print_registration(&status);
        }
    }
    Ok(ok)
}

pub(crate) fn history(profile: &Path, limit: usize) -> Result<bool> {
    let h = History::open(&profile.join("history.sqlite"))?;
    let calls = h.recent(limit)?;
    if calls.is_empty() {
        println!("no calls");
    }
    for c in calls {
        let when = c
            .started
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        println!(
            "{when} {} {} {} {} {}{}",
            match c.direction {
                CallDirection::Outgoing => "out",
                CallDirection::Incoming => "in ",
            },
            c.remote_identity,
            clock(c.duration()),
            c.end_reason,
            c.codec.as_deref().unwrap_or("-"),
            c.mos.map(|m| format!(" MOS {m:.2}")).unwrap_or_default(),
        );
    }
    Ok(true)
}
