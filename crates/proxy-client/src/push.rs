//! Push notifications for SIP (RFC 8599): the `pn-provider`, `pn-prid`
//! and `pn-param` SIP URI parameters a client puts in its Contact URI so the
//! proxy can wake it, and what to do with `555 Push Notification Service Not
//! Supported`.
//!
//! The app owns the token (it comes from APNs, FCM, ...): it hands a new one
//! over with [`PushState::set_token`], which says whether the Contact changed
//! and a re-registration is due.

use std::fmt;

/// A push token and where it is valid.
#[derive(Clone, PartialEq, Eq)]
pub struct PushToken {
    provider: String,
    prid: String,
    param: Option<String>,
}

/// Why a push parameter cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PushError {
    /// A value is empty.
    #[error("{field} is empty")]
    Empty {
        /// `pn-provider`, `pn-prid` or `pn-param`.
        field: &'static str,
    },
    /// `pn-provider` is not a token (RFC 8599 §4.1.1: e.g. `apns`, `fcm`, `webpush`).
    #[error("pn-provider {0:?} is not a token")]
    InvalidProvider(String),
}

impl PushToken {
    /// A token for `provider` (`apns`, `fcm`, `webpush`, ...). The PRID is the
    /// provider's device token; it is escaped where the URI needs it.
    ///
    /// # Errors
    ///
    /// [`PushError::Empty`], [`PushError::InvalidProvider`].
    pub fn new(provider: &str, prid: &str) -> Result<PushToken, PushError> {
        if provider.is_empty() {
            return Err(PushError::Empty {
                field: "pn-provider",
            });
        }
        if prid.is_empty() {
            return Err(PushError::Empty { field: "pn-prid" });
        }
        if !provider
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-.!%*_+`'~".contains(c))
        {
            return Err(PushError::InvalidProvider(provider.to_owned()));
        }
        Ok(PushToken {
            provider: provider.to_owned(),
            prid: prid.to_owned(),
            param: None,
        })
    }

    /// Adds `pn-param` (for APNs: `TEAMID.bundle.id.voip`).
    ///
    /// # Errors
    ///
    /// [`PushError::Empty`].
    pub fn with_param(mut self, param: &str) -> Result<PushToken, PushError> {
        if param.is_empty() {
            return Err(PushError::Empty { field: "pn-param" });
        }
        self.param = Some(param.to_owned());
        Ok(self)
    }

    /// `pn-provider`.
    #[must_use]
    pub fn provider(&self) -> &str {
        &self.provider
    }

    /// `pn-prid` (unescaped).
    #[must_use]
    pub fn prid(&self) -> &str {
        &self.prid
    }

    /// `pn-param` (unescaped).
    #[must_use]
    pub fn param(&self) -> Option<&str> {
        self.param.as_deref()
    }

    /// The Contact URI parameters, e.g.
    /// `;pn-provider=apns;pn-param=ABC.com.example.voip;pn-prid=00fc13…`.
    #[must_use]
    pub fn uri_params(&self) -> String {
        let mut s = format!(";pn-provider={}", escape(&self.provider));
        if let Some(param) = &self.param {
            s.push_str(";pn-param=");
            s.push_str(&escape(param));
        }
        s.push_str(";pn-prid=");
        s.push_str(&escape(&self.prid));
        s
    }
}

impl fmt::Debug for PushToken {
    /// The device token is personal data: only its length is shown.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PushToken")
            .field("provider", &self.provider)
            .field("prid", &format_args!("<{} chars>", self.prid.len()))
            .field("param", &self.param)
            .finish()
    }
}

/// What a REGISTER response means for push.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PushOutcome {
    /// Nothing changes.
    Unchanged,
    /// 555: the proxy does not support push; register again without the
    /// pn-* parameters (RFC 8599 §4.1.2).
    RetryWithoutPush,
}

/// The push side of a registration: the current token and whether the
/// proxy refused push.
#[derive(Debug, Clone, Default)]
pub struct PushState {
    token: Option<PushToken>,
    refused: bool,
    /// Whether the last 2xx to a REGISTER with the token said the network
    /// will push (RFC 8599 §4.1.1); `None` before one.
    confirmed: Option<bool>,
}

impl PushState {
    /// With a token, or none.
    #[must_use]
    pub fn new(token: Option<PushToken>) -> PushState {
        PushState {
            token,
            refused: false,
            confirmed: None,
        }
    }

    /// Hands over a new token (or removes it). Returns true when the
    /// Contact changes, so the app must re-register. A new token is offered
    /// again even where a proxy refused an old one.
    pub fn set_token(&mut self, token: Option<PushToken>) -> bool {
        if self.token == token {
            return false;
        }
        let before = self.uri_params();
        self.token = token;
        self.refused = false;
        self.confirmed = None;
        before != self.uri_params()
    }

    /// The token, if any.
    #[must_use]
    pub fn token(&self) -> Option<&PushToken> {
        self.token.as_ref()
    }

    /// Whether the proxy answered 555.
    #[must_use]
    pub fn is_refused(&self) -> bool {
        self.refused
    }

    /// Whether the Contact carries push parameters now.
    #[must_use]
    pub fn is_active(&self) -> bool {
        self.token.is_some() && !self.refused
    }

    /// The pn-* URI parameters for the Contact URI, empty without a token or
    /// after a 555.
    #[must_use]
    pub fn uri_params(&self) -> String {
        match &self.token {
            Some(t) if !self.refused => t.uri_params(),
            _ => String::new(),
        }
    }

    /// Looks at a 2xx to a REGISTER whose Contact URI was
    /// `registered_contact`: when that carried the current push parameters,
    /// the network will ask for pushes only if its `Feature-Caps` name the
    /// token's service in `+sip.pns` (RFC 8599 §4.1.1); without that, the
    /// app must not rely on pushes and should stay awake to take calls. A
    /// REGISTER with an older token (or none) says nothing about this one.
    /// Returns whether this answer changed what is known.
    pub fn handle_register_ok(
        &mut self,
        response: &sip_core::Message,
        registered_contact: &str,
    ) -> bool {
        let params = self.uri_params();
        if params.is_empty() || !registered_contact.ends_with(&params) {
            return false;
        }
        let Some(token) = self.token.as_ref() else {
            return false;
        };
        let confirmed = response
            .header_values("Feature-Caps")
            .flat_map(|line| line.split(','))
            .any(|value| names_service(value, token.provider()));
        let changed = self.confirmed != Some(confirmed);
        self.confirmed = Some(confirmed);
        changed
    }

    /// Whether the network said it will push: `Some(false)` after a 2xx
    /// without `+sip.pns` for the token's service, `None` before any.
    #[must_use]
    pub fn is_confirmed(&self) -> Option<bool> {
        self.confirmed.filter(|_| self.is_active())
    }

    /// Looks at the status of a REGISTER answer.
    pub fn handle_register_status(&mut self, status: u16) -> PushOutcome {
        if status == 555 && self.is_active() {
            self.refused = true;
            PushOutcome::RetryWithoutPush
        } else {
            PushOutcome::Unchanged
        }
    }
}

/// Whether a `Feature-Caps` value (`*;+sip.pns="fcm";+sip.pnsreg="120"`)
/// names `provider` in `+sip.pns`.
fn names_service(value: &str, provider: &str) -> bool {
    value.split(';').skip(1).any(|param| {
        let (name, value) = param.split_once('=').unwrap_or((param, ""));
        name.trim().eq_ignore_ascii_case("+sip.pns")
            && value
                .trim()
                .trim_matches('"')
                .eq_ignore_ascii_case(provider)
    })
}

/// Escapes what may not stand in a SIP URI parameter value (RFC 3261
/// `paramchar`: unreserved, `[]/:&+$`, escaped).
fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        let plain = b.is_ascii_alphanumeric() || b"-_.!~*'()[]/:&+$".contains(&b);
        if plain {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok_with(feature_caps: &str) -> sip_core::Message {
        let caps = if feature_caps.is_empty() {
            String::new()
        } else {
            format!("Feature-Caps: {feature_caps}\r\n")
        };
        sip_core::Message::parse(
            format!(
                "SIP/2.0 200 OK\r\nVia: SIP/2.0/TLS 192.0.2.4:5061;branch=z9hG4bK1\r\n\
                 From: <sip:a@example.com>;tag=1\r\nTo: <sip:a@example.com>;tag=2\r\n\
                 Call-ID: c\r\nCSeq: 1 REGISTER\r\n{caps}Content-Length: 0\r\n\r\n"
            )
            .into_bytes(),
        )
        .unwrap()
    }

    #[test]
    fn rfc8599_4_1_1_the_network_confirms_push_in_feature_caps() {
        let contact = |state: &PushState| format!("sip:a@192.0.2.4:5061;ob{}", state.uri_params());
        let mut state = PushState::new(Some(PushToken::new("fcm", "t").unwrap()));
        let registered = contact(&state);
        assert_eq!(state.is_confirmed(), None);
        let caps = "*;+sip.pns=\"FCM\";+sip.pnsreg=\"120\"";
        assert!(state.handle_register_ok(&ok_with(caps), &registered));
        assert_eq!(state.is_confirmed(), Some(true));
        let later = "*;+sip.pnsreg=\"1\", *;+sip.pns=\"fcm\"";
        assert!(!state.handle_register_ok(&ok_with(later), &registered));
        // Another service, or none: not confirmed.
        let apns = "*;+sip.pns=\"apns\"";
        assert!(state.handle_register_ok(&ok_with(apns), &registered));
        assert_eq!(state.is_confirmed(), Some(false));
        assert!(!state.handle_register_ok(&ok_with(""), &registered));
        // A new token starts over, and the answer to a REGISTER that still
        // carried the old one says nothing about it.
        state.set_token(Some(PushToken::new("fcm", "u").unwrap()));
        assert_eq!(state.is_confirmed(), None);
        let fcm = "*;+sip.pns=\"fcm\"";
        assert!(!state.handle_register_ok(&ok_with(fcm), &registered));
        assert_eq!(state.is_confirmed(), None);
        assert!(state.handle_register_ok(&ok_with(fcm), &contact(&state)));
        // No token, nothing to confirm.
        state.set_token(None);
        assert!(!state.handle_register_ok(&ok_with(fcm), &contact(&state)));
        assert_eq!(state.is_confirmed(), None);
    }

    #[test]
    fn rfc8599_4_1_1_contact_uri_parameters() {
        let token = PushToken::new(
            "apns",
            "00fc13adff785122b4ad28809a3420982341241421348097878e577c991de8f0",
        )
        .unwrap()
        .with_param("DEF123GHIJ.com.example.yourapp.voip")
        .unwrap();
        assert_eq!(
            token.uri_params(),
            ";pn-provider=apns;pn-param=DEF123GHIJ.com.example.yourapp.voip;pn-prid=00fc13adff785122b4ad28809a3420982341241421348097878e577c991de8f0"
        );
        let fcm = PushToken::new("fcm", "a b;c=d").unwrap();
        assert_eq!(fcm.uri_params(), ";pn-provider=fcm;pn-prid=a%20b%3Bc%3Dd");
        assert!(
            !format!("{fcm:?}").contains("a b"),
            "the token is not printed"
        );
        assert_eq!(
            PushToken::new("", "x"),
            Err(PushError::Empty {
                field: "pn-provider"
            })
        );
        assert!(matches!(
            PushToken::new("a;b", "x"),
            Err(PushError::InvalidProvider(_))
        ));
    }

    #[test]
    fn rfc8599_4_1_2_555_drops_the_push_parameters_until_a_new_token() {
        let mut push = PushState::new(Some(PushToken::new("fcm", "t1").unwrap()));
        assert!(push.is_active());
        assert_eq!(push.handle_register_status(200), PushOutcome::Unchanged);
        assert_eq!(
            push.handle_register_status(555),
            PushOutcome::RetryWithoutPush
        );
        assert_eq!(push.uri_params(), "");
        assert_eq!(push.handle_register_status(555), PushOutcome::Unchanged);
        assert!(
            !push.set_token(Some(PushToken::new("fcm", "t1").unwrap())),
            "same token"
        );
        assert!(push.set_token(Some(PushToken::new("fcm", "t2").unwrap())));
        assert_eq!(push.uri_params(), ";pn-provider=fcm;pn-prid=t2");
        assert!(push.set_token(None));
        assert_eq!(push.uri_params(), "");
    }
}
