//! `dialer shell`: an interactive phone.
//!
//! Lines are read on their own thread (with line editing and history when
//! stdin is a terminal, plain lines otherwise, so scripts can drive it) and
//! handed to the async loop that also prints the phone's events.

use std::io::{BufRead, IsTerminal};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use softphone::{Call, CallState, Phone, PhoneEvent, RegistrationStatus};
use tokio::sync::mpsc;

use crate::options::{AccountArgs, MediaArgs, phone_config};

const HELP: &str = "commands: call TARGET | answer | reject | hangup | hold | resume | \
transfer TARGET | dtmf DIGITS | mute | unmute | status | history | help | quit";

fn read_lines(tx: mpsc::UnboundedSender<String>) {
    if std::io::stdin().is_terminal() {
        use reedline::{DefaultPrompt, DefaultPromptSegment, Reedline, Signal};
        let mut editor = Reedline::create();
        let prompt = DefaultPrompt::new(
            DefaultPromptSegment::Basic("dialer".into()),
            DefaultPromptSegment::Empty,
        );
        loop {
            match editor.read_line(&prompt) {
                Ok(Signal::Success(line)) => {
                    if tx.send(line).is_err() {
                        return;
                    }
                }
                Ok(Signal::CtrlC | Signal::CtrlD) | Err(_) => {
                    let _ = tx.send("quit".into());
                    return;
                }
                Ok(_) => {}
            }
        }
    } else {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                return;
            }
        }
        let _ = tx.send("quit".into());
    }
}

struct Shell {
    phone: Phone,
    current: Option<Call>,
    incoming: Option<Call>,
    registration: String,
    answered: Option<Instant>,
    state: String,
}

impl Shell {
    fn status_line(&self) -> String {
        let call = match (&self.current, self.answered) {
            (Some(c), Some(a)) => {
                let s = a.elapsed().as_secs();
                format!("{} {} {:02}:{:02}", c.id(), self.state, s / 60, s % 60)
            }
            (Some(c), None) => format!("{} {}", c.id(), self.state),
            (None, _) => "no call".into(),
        };
        format!("[{} | {}]", self.registration, call)
    }

    fn call(&self) -> Result<&Call> {
        self.current.as_ref().context("no call")
    }

    /// Runs one command line; false for quit.
    async fn command(&mut self, line: &str) -> Result<bool> {
        let mut words = line.split_whitespace();
        let Some(cmd) = words.next() else {
            return Ok(true);
        };
        let arg = words.collect::<Vec<_>>().join(" ");
        match cmd {
            "quit" | "exit" => return Ok(false),
            "help" => println!("{HELP}"),
            "call" => {
                anyhow::ensure!(!arg.is_empty(), "call TARGET");
                let c = self.phone.dial(None, &arg).await?;
                self.current = Some(c);
                self.answered = None;
                self.state = "dialing".into();
            }
            "answer" => {
                let c = self.incoming.take().context("no incoming call")?;
                c.answer().await?;
                self.current = Some(c);
            }
            "reject" => {
                let c = self.incoming.take().context("no incoming call")?;
                c.reject(486).await?;
            }
            "hangup" => self.call()?.hangup().await?,
            "hold" => self.call()?.hold().await?,
            "resume" => self.call()?.resume().await?,
            "transfer" => {
                anyhow::ensure!(!arg.is_empty(), "transfer TARGET");
                self.call()?.transfer(&arg).await?;
            }
            "dtmf" => self.call()?.send_dtmf(&arg).await?,
            "mute" => self.call()?.set_muted(true).await?,
            "unmute" => self.call()?.set_muted(false).await?,
            "status" => {
                for a in self.phone.accounts().await? {
                    println!("account {}: {} {:?}", a.id, a.aor, a.status);
                }
                for c in self.phone.calls().await? {
                    println!(
                        "{} {:?} {:?} with {}{}",
                        c.id,
                        c.direction,
                        c.state,
                        c.remote.user(),
                        c.quality.map(|q| format!(" ({q})")).unwrap_or_default()
                    );
                }
            }
            "history" => {
                for c in self.phone.history(10).await? {
                    println!(
                        "{:?} {} {} s {}",
                        c.direction,
                        c.remote_identity,
                        c.duration().as_secs(),
                        c.end_reason
                    );
                }
            }
            other => println!("unknown command {other:?}; {HELP}"),
        }
        Ok(true)
    }

    fn event(&mut self, ev: PhoneEvent) {
        match ev {
            PhoneEvent::Registration { status, .. } => {
                self.registration = match status {
                    RegistrationStatus::Registered { .. } => "registered".into(),
                    RegistrationStatus::Registering => "registering".into(),
                    RegistrationStatus::Failed { status, .. } => {
                        format!("registration failed {status}")
                    }
                    _ => "not registered".into(),
                };
            }
            PhoneEvent::IncomingCall { call, from, .. } => {
                println!(
                    "incoming call from {} ({}): answer or reject",
                    from.user(),
                    call.id()
                );
                self.incoming = Some(call);
            }
            PhoneEvent::TransferCall { call, .. } => {
                println!("transferred: now calling on {}", call.id());
                self.current = Some(call);
                self.answered = None;
            }
            PhoneEvent::CallState { call, state } => {
                let ours = self.current.as_ref().is_some_and(|c| c.id() == call);
                match &state {
                    CallState::Connected if ours && self.answered.is_none() => {
                        self.answered = Some(Instant::now());
                    }
                    CallState::Ended(reason) => {
                        println!("{call} ended: {}", reason.as_text());
                        if ours {
                            self.current = None;
                            self.answered = None;
                        }
                        if self.incoming.as_ref().is_some_and(|c| c.id() == call) {
                            self.incoming = None;
                        }
                    }
                    _ => {}
                }
                if ours {
                    self.state = format!("{state:?}").to_lowercase();
                }
            }
            PhoneEvent::Dtmf { digit, .. } => println!("dtmf received: {digit}"),
            PhoneEvent::Notice { text } => println!("notice: {text}"),
            PhoneEvent::TransferProgress { status, .. } => println!("transfer: {status}"),
            _ => return,
        }
        println!("{}", self.status_line());
    }
}

pub(crate) async fn run(profile: &Path, account: &AccountArgs, media: &MediaArgs) -> Result<bool> {
    let config = phone_config(profile, account, Some(media), false)?;
    let (phone, mut events) = Phone::start(config).await.context("starting the phone")?;
    if let Some(local) = phone.accounts().await?.first().and_then(|a| a.local) {
        println!("dialer shell on {local}; {HELP}");
    }
    let (tx, mut lines) = mpsc::unbounded_channel();
    std::thread::spawn(move || read_lines(tx));
    let mut shell = Shell {
        phone: phone.clone(),
        current: None,
        incoming: None,
        registration: "not registered".into(),
        answered: None,
        state: String::new(),
    };
    loop {
        tokio::select! {
            line = lines.recv() => {
                let Some(line) = line else { break };
                match shell.command(line.trim()).await {
                    Ok(true) => {}
                    Ok(false) => break,
                    Err(e) => println!("error: {}", crate::options::describe(&e)),
                }
            }
            ev = events.next() => {
                let Some(ev) = ev else { break };
                shell.event(ev);
            }
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), phone.shutdown()).await;
    Ok(true)
}
