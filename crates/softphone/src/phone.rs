//! The [`Phone`] handle and its event stream.
//!
//! A phone is one task on the caller's tokio runtime that owns the SIP
//! endpoint, the registrations and the calls. Handles send it commands and
//! wait for the answer, so they are `Send + Sync`, cheap to clone and usable
//! from any thread; nothing of the integrator's runs on the phone's task,
//! because events are pulled from [`Events`], never pushed into callbacks.

use tokio::sync::{mpsc, oneshot};

use crate::call::{Call, CallInfo};
use crate::config::PhoneConfig;
use crate::engine::{self, Command};
use crate::error::PhoneError;
use crate::event::{CallId, PhoneEvent, RegistrationStatus};
use crate::history::CallRecord;

/// A running phone. See the module docs.
#[derive(Debug, Clone)]
pub struct Phone {
    pub(crate) commands: mpsc::UnboundedSender<Command>,
}

/// The events of one phone, in order.
#[derive(Debug)]
pub struct Events {
    rx: mpsc::UnboundedReceiver<PhoneEvent>,
}

impl Events {
    /// The next event; `None` once the phone has stopped and every event was read.
    pub async fn next(&mut self) -> Option<PhoneEvent> {
        self.rx.recv().await
    }

    /// The next event if one is waiting.
    pub fn try_next(&mut self) -> Option<PhoneEvent> {
        self.rx.try_recv().ok()
    }

    /// The next event, blocking the thread: for threads outside any async
    /// runtime. Panics when called from inside one (tokio's rule).
    pub fn blocking_next(&mut self) -> Option<PhoneEvent> {
        self.rx.blocking_recv()
    }
}

/// An account as the phone sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountInfo {
    /// The account's id in the configuration.
    pub id: String,
    /// Our address of record.
    pub aor: String,
    /// Its registration.
    pub status: RegistrationStatus,
    /// The local address SIP uses for it (Via and Contact).
    pub local: Option<std::net::SocketAddr>,
    /// With a push token through a relay: whether the registrar said it
    /// will push (RFC 8599 §4.1.1); `Some(false)` means the app must stay
    /// awake to take calls. `None` without push or before an answer.
    pub push_confirmed: Option<bool>,
}

impl Phone {
    /// Starts a phone on the current tokio runtime: binds the SIP listeners
    /// and, when the configuration says so, registers every account.
    ///
    /// Fails when a listener cannot be bound or an account is unusable
    /// (for instance a registrar that is not a SIP URI).
    pub async fn start(config: PhoneConfig) -> Result<(Phone, Events), PhoneError> {
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let commands = engine::start(config, events_tx).await?;
        Ok((Phone { commands }, Events { rx: events_rx }))
    }

    pub(crate) async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, PhoneError>>) -> Command,
    ) -> Result<T, PhoneError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(make(tx))
            .map_err(|_| PhoneError::Stopped)?;
        rx.await.map_err(|_| PhoneError::Stopped)?
    }

    /// Calls `target` (a SIP URI, or a user/number on the account's domain)
    /// from `account` (`None`: the first account). Returns once the INVITE
    /// is on its way; follow the call through [`PhoneEvent::CallState`].
    pub async fn dial(&self, account: Option<&str>, target: &str) -> Result<Call, PhoneError> {
        let account = account.map(str::to_owned);
        let target = target.to_owned();
        let id = self
            .ask(|reply| Command::Dial {
                account,
                target,
                reply,
            })
            .await?;
        Ok(Call::new(id, self.clone()))
    }

    /// A handle to a call the phone knows.
    pub fn call(&self, id: CallId) -> Call {
        Call::new(id, self.clone())
    }

    /// Every call that has not ended.
    pub async fn calls(&self) -> Result<Vec<CallInfo>, PhoneError> {
        self.ask(|reply| Command::Calls { reply }).await
    }

    /// The accounts and their registration status.
    pub async fn accounts(&self) -> Result<Vec<AccountInfo>, PhoneError> {
        self.ask(|reply| Command::Accounts { reply }).await
    }

    /// The app was woken by a push notification (or the network came
    /// back): accounts registered through relay proxies register again at
    /// once, so the INVITE the proxy holds can be delivered (RFC 8599), and
    /// a proxy that is backing off is tried now.
    pub async fn wake(&self) -> Result<(), PhoneError> {
        self.ask(|reply| Command::Wake { reply }).await
    }

    /// Hands over a new push token (or `None` to stop push): accounts
    /// registered through relay proxies register again with it.
    pub async fn set_push_token(
        &self,
        token: Option<proxy_client::push::PushToken>,
    ) -> Result<(), PhoneError> {
        self.ask(|reply| Command::SetPushToken { token, reply })
            .await
    }

    /// The most recent calls from the history, newest first.
    pub async fn history(&self, limit: usize) -> Result<Vec<CallRecord>, PhoneError> {
        self.ask(|reply| Command::History { limit, reply }).await
    }

    /// Hangs up every call, removes every registration, and stops the
    /// phone (bounded: a registrar that does not answer is given up on
    /// after a few seconds).
    pub async fn shutdown(&self) -> Result<(), PhoneError> {
        self.ask(|reply| Command::Shutdown { reply }).await
    }
}
