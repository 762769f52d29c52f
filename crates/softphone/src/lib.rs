//! # softphone
//!
//! The thin composition an integrator embeds: a [`Phone`] started from a
//! typed configuration registers its accounts, places and takes [`Call`]s
//! (hold, DTMF, blind and attended transfer, session timers), runs their
//! media (SDP offer/answer, SRTP, codecs, jitter buffer, audio devices), and
//! keeps a [`History`] of calls in SQLite.
//!
//! ```no_run
//! # async fn example() -> Result<(), softphone::PhoneError> {
//! use softphone::{Config, Phone, PhoneConfig, PhoneEvent};
//! use config_export::Account;
//!
//! let mut config = Config::default();
//! let mut account = Account::new("office", "alice", "sip:pbx.example.com");
//! account.password = Some(config_export::Secret::new("secret"));
//! config.accounts.push(account);
//! let (phone, mut events) = Phone::start(PhoneConfig::new(config)).await?;
//! let call = phone.dial(None, "bob").await?;
//! while let Some(event) = events.next().await {
//!     if let PhoneEvent::CallState { call: id, state } = event {
//!         println!("{id}: {state:?}");
//!     }
//! }
//! # Ok(()) }
//! ```
//!
//! ## Threads
//!
//! A phone is one task on the caller's tokio runtime. [`Phone`] and
//! [`Call`] are `Send + Sync` handles that send it commands; events are
//! pulled from [`Events`], so no integrator code runs on the phone's task
//! and no callback runs on a thread the integrator did not choose. Audio
//! devices run on their own real-time threads (see `media-audio`).

mod call;
mod config;
pub mod diagnostics;
mod engine;
mod error;
mod event;
pub mod history;
mod media;
mod phone;
mod turn;

pub use call::{Call, CallInfo};
pub use config::{AudioFactory, AudioSetup, Config, Dns, Listen, PhoneConfig};
pub use diagnostics::Pii;
pub use engine::check_config;
pub use error::PhoneError;
pub use event::{
    CallId, CallState, EndReason, Identity, PhoneEvent, QualityReport, RegistrationStatus,
};
pub use history::{CallDirection, CallRecord, History, HistoryError};
pub use phone::{AccountInfo, Events, Phone};
