//! SDP offer/answer for one audio stream (RFC 3264), with SDES-SRTP
//! (RFC 4568).
//!
//! [`MediaNegotiation`] holds what the local side supports
//! ([`MediaSettings`]) and the state of the exchange. It makes offers and
//! answers and reads the other side's, and hands back a
//! [`NegotiatedAudio`]: where to send, which codec and payload types, the
//! packet time, the direction, RTCP multiplexing and the SRTP keys.
//!
//! The rules it follows:
//!
//! - Codecs (RFC 3264 §6.1): the answer lists the offered codecs the
//!   answerer supports, in the answerer's order of preference, with the
//!   offer's payload type numbers; both sides send the first codec of the
//!   answer. PCMU (0) and PCMA (8) are static payload types; Opus
//!   (`opus/48000/2`) and `telephone-event` (RFC 4733, events 0-16) are
//!   dynamic and matched by their `rtpmap`.
//! - Direction (RFC 3264 §6.1, §8.4): a `sendonly` offer (hold) is
//!   answered `recvonly`, `recvonly` with `sendonly`, `inactive` with
//!   `inactive`; the local direction ([`MediaNegotiation::set_direction`])
//!   narrows both.
//! - Packet time (RFC 3264 §5.1): each side asks for the `ptime` it wants
//!   to receive; the sender follows it within the peer's `maxptime`.
//! - RTCP multiplexing (RFC 5761 §5.1.1): used when both sides list
//!   `a=rtcp-mux`; otherwise RTCP goes to `a=rtcp` (RFC 3605) or the next
//!   port.
//! - SRTP ([`SrtpPolicy`]): mandatory SRTP offers `RTP/SAVP` with
//!   `a=crypto` lines and refuses plain RTP; best-effort SRTP offers
//!   `RTP/AVP` with `a=crypto` lines and takes SRTP when the answer keeps a
//!   crypto line. The answerer picks the first offered crypto line whose
//!   suite it supports and answers with the same tag and suite and a fresh
//!   key (RFC 4568 §7.1.1). Keys come from the operating system's CSPRNG.
//! - Streams the answerer cannot take (video, an unknown protocol, a
//!   second audio stream, no common codec, SRTP it cannot meet) are
//!   answered with port 0 (RFC 3264 §6); within a session, a re-offer
//!   whose audio cannot be taken is refused whole
//!   ([`NegotiationError::ReofferRefused`], for SIP a 488), and our
//!   re-offers keep every m-line of the session in its place.
//! - Every description the local side sends keeps the `o=` session id;
//!   the version grows by one whenever the description changes
//!   (RFC 3264 §8).
//!
//! ```
//! use std::net::{IpAddr, Ipv4Addr};
//! use media_engine::negotiation::{MediaNegotiation, MediaSettings};
//! use media_engine::sdp::Direction;
//! use rand::SeedableRng;
//!
//! let mut rng = rand::rngs::StdRng::seed_from_u64(1);
//! let alice_ip = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
//! let bob_ip = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2));
//! let mut alice = MediaNegotiation::new(MediaSettings::new(alice_ip, 4000), &mut rng);
//! let mut bob = MediaNegotiation::new(MediaSettings::new(bob_ip, 5000), &mut rng);
//!
//! let offer = alice.create_offer().unwrap();
//! let answer = bob.handle_offer(&offer).unwrap();
//! let at_alice = alice.handle_answer(&answer.description).unwrap();
//! let at_bob = answer.audio.unwrap();
//!
//! assert_eq!(at_alice.remote_rtp.port(), 5000);
//! assert_eq!(at_bob.remote_rtp.port(), 4000);
//! assert_eq!(at_alice.codec, at_bob.codec);
//! assert_eq!(at_alice.direction, Direction::SendRecv);
//! // Mandatory SRTP by default: each side receives with the key the other sends with.
//! let (a, b) = (at_alice.srtp.unwrap(), at_bob.srtp.unwrap());
//! assert_eq!(a.remote, b.local);
//! assert_eq!(a.local, b.remote);
//! ```

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use rand::Rng;
use thiserror::Error;
use tracing::debug;

use crate::sdp::{
    Address, Attribute, Connection, CryptoAttribute, Direction, Fmtp, MediaDescription, MediaKind,
    Origin, Protocol, RtpMap, SessionDescription,
};
use crate::srtp::{SrtpError, SrtpKeyMaterial, SrtpSuite};

/// Payload type this side offers for Opus.
pub const OPUS_PAYLOAD_TYPE: u8 = 111;

/// Payload type this side offers for `telephone-event/8000`.
pub const TELEPHONE_EVENT_PAYLOAD_TYPE: u8 = 101;

/// Payload type this side offers for `telephone-event/48000`, beside Opus:
/// RFC 4733 events share the audio's RTP clock.
pub const TELEPHONE_EVENT_48K_PAYLOAD_TYPE: u8 = 110;

/// An unspecified address, as old-style hold writes it (RFC 3264 §8.4): a
/// peer that offers it receives nothing from this side.
pub const HOLD_ADDRESS: IpAddr = IpAddr::V4(Ipv4Addr::UNSPECIFIED);

/// The audio codecs this crate negotiates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Codec {
    /// G.711 mu-law, static payload type 0.
    Pcmu,
    /// G.711 A-law, static payload type 8.
    Pcma,
    /// Opus (RFC 7587), dynamic payload type, `opus/48000/2`.
    Opus,
}

impl Codec {
    /// The encoding name in `rtpmap`.
    pub fn encoding_name(self) -> &'static str {
        match self {
            Codec::Pcmu => "PCMU",
            Codec::Pcma => "PCMA",
            Codec::Opus => "opus",
        }
    }

    /// The RTP clock rate.
    pub fn clock_rate(self) -> u32 {
        match self {
            Codec::Pcmu | Codec::Pcma => 8000,
            Codec::Opus => 48000,
        }
    }

    /// The static payload type, if the codec has one (RFC 3551 §6).
    pub fn static_payload_type(self) -> Option<u8> {
        match self {
            Codec::Pcmu => Some(0),
            Codec::Pcma => Some(8),
            Codec::Opus => None,
        }
    }

    /// The payload type this side offers.
    pub fn offered_payload_type(self) -> u8 {
        self.static_payload_type().unwrap_or(OPUS_PAYLOAD_TYPE)
    }

    fn rtpmap(self, payload_type: u8) -> RtpMap {
        RtpMap {
            payload_type,
            encoding: self.encoding_name().to_owned(),
            clock_rate: self.clock_rate(),
            channels: (self == Codec::Opus).then_some(2),
        }
    }

    /// The `fmtp` this side sends for the codec: Opus asks for in-band
    /// FEC (RFC 7587 §6.1).
    fn fmtp(self) -> Option<&'static str> {
        match self {
            Codec::Opus => Some("minptime=10;useinbandfec=1"),
            Codec::Pcmu | Codec::Pcma => None,
        }
    }
}

/// How SRTP is offered and accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SrtpPolicy {
    /// Plain RTP only: crypto lines are neither sent nor taken, and
    /// `RTP/SAVP` offers are refused. Set it through
    /// [`MediaSettings::dangerous`].
    Disabled,
    /// Offer `RTP/AVP` with crypto lines and use SRTP if the peer takes
    /// it; accept plain RTP otherwise.
    BestEffort,
    /// Offer `RTP/SAVP`; refuse plain RTP.
    Mandatory,
}

/// What the local side supports and wants.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct MediaSettings {
    /// The `o=` user name.
    pub username: String,
    /// The local media address, written in `o=` and `c=`.
    pub address: IpAddr,
    /// The local RTP port.
    pub port: u16,
    /// Codecs in order of preference.
    pub codecs: Vec<Codec>,
    /// Whether to offer and accept RFC 4733 telephone-events.
    pub telephone_event: bool,
    /// Packet time this side wants to receive, in milliseconds.
    pub ptime: u32,
    /// Longest packet time this side accepts, in milliseconds.
    pub max_ptime: u32,
    /// Whether to offer and accept RTCP multiplexing.
    pub rtcp_mux: bool,
    /// SRTP suites in order of preference.
    pub crypto_suites: Vec<SrtpSuite>,
    srtp: SrtpPolicy,
}

/// Settings that weaken security; reached through
/// [`MediaSettings::dangerous`].
#[derive(Debug)]
pub struct DangerousMediaSettings<'a> {
    settings: &'a mut MediaSettings,
}

impl MediaSettings {
    /// Defaults: Opus, PCMU, PCMA; telephone-events; 20 ms; RTCP
    /// multiplexing; mandatory SRTP with AES_CM_128_HMAC_SHA1_80, then
    /// AEAD_AES_128_GCM, then AES_CM_128_HMAC_SHA1_32.
    pub fn new(address: IpAddr, port: u16) -> Self {
        MediaSettings {
            username: "-".to_owned(),
            address,
            port,
            codecs: vec![Codec::Opus, Codec::Pcmu, Codec::Pcma],
            telephone_event: true,
            ptime: 20,
            max_ptime: 120,
            rtcp_mux: true,
            crypto_suites: vec![
                SrtpSuite::AesCm128HmacSha1_80,
                SrtpSuite::AeadAes128Gcm,
                SrtpSuite::AesCm128HmacSha1_32,
            ],
            srtp: SrtpPolicy::Mandatory,
        }
    }

    /// With codecs in this order of preference.
    pub fn with_codecs(mut self, codecs: impl IntoIterator<Item = Codec>) -> Self {
        self.codecs = codecs.into_iter().collect();
        self
    }

    /// With SRTP suites in this order of preference.
    pub fn with_crypto_suites(mut self, suites: impl IntoIterator<Item = SrtpSuite>) -> Self {
        self.crypto_suites = suites.into_iter().collect();
        self
    }

    /// With best-effort SRTP (`RTP/AVP` with crypto lines) instead of
    /// mandatory SRTP.
    pub fn with_best_effort_srtp(mut self) -> Self {
        self.srtp = SrtpPolicy::BestEffort;
        self
    }

    /// With mandatory SRTP (the default).
    pub fn with_mandatory_srtp(mut self) -> Self {
        self.srtp = SrtpPolicy::Mandatory;
        self
    }

    /// With this packet time, in milliseconds.
    pub fn with_ptime(mut self, ptime: u32) -> Self {
        self.ptime = ptime;
        self
    }

    /// With or without RTCP multiplexing.
    pub fn with_rtcp_mux(mut self, rtcp_mux: bool) -> Self {
        self.rtcp_mux = rtcp_mux;
        self
    }

    /// With or without telephone-events.
    pub fn with_telephone_event(mut self, telephone_event: bool) -> Self {
        self.telephone_event = telephone_event;
        self
    }

    /// The SRTP policy.
    pub fn srtp_policy(&self) -> SrtpPolicy {
        self.srtp
    }

    /// Options that weaken security.
    pub fn dangerous(&mut self) -> DangerousMediaSettings<'_> {
        DangerousMediaSettings { settings: self }
    }
}

impl DangerousMediaSettings<'_> {
    /// Plain RTP only: media travels unencrypted and unauthenticated.
    pub fn disable_srtp(&mut self) -> &mut Self {
        self.settings.srtp = SrtpPolicy::Disabled;
        self
    }
}

/// The SRTP keys of a negotiated stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NegotiatedSrtp {
    /// The key this side protects with (it sent it in its description).
    pub local: SrtpKeyMaterial,
    /// The key this side unprotects with (the peer sent it).
    pub remote: SrtpKeyMaterial,
}

/// The outcome of offer/answer for the audio stream.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct NegotiatedAudio {
    /// Where to send RTP.
    pub remote_rtp: SocketAddr,
    /// Where to send RTCP (the RTP address when multiplexed).
    pub remote_rtcp: SocketAddr,
    /// The codec both sides send.
    pub codec: Codec,
    /// Payload type to send the codec with (the peer's number).
    pub send_payload_type: u8,
    /// Payload type the codec arrives with (this side's number).
    pub receive_payload_type: u8,
    /// The peer's `fmtp` for the codec, if any.
    pub remote_fmtp: Option<String>,
    /// Payload type to send telephone-events with, if negotiated.
    pub send_telephone_event: Option<u8>,
    /// Payload type telephone-events arrive with, if negotiated.
    pub receive_telephone_event: Option<u8>,
    /// The clock rate of the telephone-event payload both ways (the
    /// codec's, or 8000 when the peer has events only at 8000 Hz): event
    /// durations count in it (RFC 4733 §2.5.1.5).
    pub telephone_event_rate: u32,
    /// Packet time to send with, in milliseconds.
    pub ptime: u32,
    /// What this side does: send, receive, both or neither.
    pub direction: Direction,
    /// Whether RTP and RTCP share one port.
    pub rtcp_mux: bool,
    /// The SRTP keys, or `None` for plain RTP.
    pub srtp: Option<NegotiatedSrtp>,
}

/// An answer to a remote offer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    /// The description to send back.
    pub description: SessionDescription,
    /// The audio stream, or `None` when every stream was refused.
    pub audio: Option<NegotiatedAudio>,
}

/// Why offer/answer failed.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum NegotiationError {
    /// An offer was made and its answer has not come; a new offer must
    /// wait (RFC 3264 §4). For SIP this is the 491 case.
    #[error("an offer is already pending")]
    OfferPending,
    /// An answer arrived but no offer was made.
    #[error("no offer is pending")]
    NoPendingOffer,
    /// The answer does not have one media section per offered section
    /// (RFC 3264 §6).
    #[error("answer has {answered} media sections, the offer had {offered}")]
    MediaCountMismatch {
        /// Sections offered.
        offered: usize,
        /// Sections answered.
        answered: usize,
    },
    /// The peer refused the audio stream (port 0).
    #[error("audio stream refused")]
    AudioRejected,
    /// The answer changed the transport protocol of the stream.
    #[error("answer changed the transport protocol")]
    ProtocolMismatch,
    /// No codec of the answer is one this side offered and supports.
    #[error("no common codec")]
    NoCommonCodec,
    /// SRTP is mandatory and the answer has no crypto line.
    #[error("srtp required but not answered")]
    SrtpRequired,
    /// The answer's crypto line matches no offered tag and suite, or its
    /// key is unusable.
    #[error("answered crypto line does not match the offer")]
    CryptoMismatch,
    /// The media address is a host name, which a pure core cannot resolve.
    #[error("media address is a host name")]
    UnresolvedAddress,
    /// The media section has no connection address at either level.
    #[error("no connection address")]
    MissingConnection,
    /// Key material could not be made.
    #[error(transparent)]
    Srtp(#[from] SrtpError),
    /// A re-offer's audio cannot be accepted (no common codec, plain RTP
    /// where SRTP is mandatory...): the offer is refused whole (for SIP,
    /// 488) and the session stays as it was (RFC 3264 §8).
    #[error("the re-offer's audio cannot be accepted")]
    ReofferRefused,
}

/// Offer/answer state of one call. See the module documentation.
#[derive(Debug)]
pub struct MediaNegotiation {
    settings: MediaSettings,
    session_id: u64,
    last_local: Option<SessionDescription>,
    /// `last_local` is an offer whose answer came: another callee of a
    /// forked INVITE may answer it too.
    offer_answered: bool,
    pending_offer: Option<SessionDescription>,
    /// One key per suite, made when first needed and kept across
    /// re-offers so an unchanged session keeps an unchanged description.
    keys: Vec<SrtpKeyMaterial>,
    /// The peer's key in the last offer or answer: when an offer brings
    /// another, media may have moved to a new endpoint, whose receiver
    /// starts our stream's roll-over counter at 0; our answer then carries
    /// a new key too, so that fresh start reuses no keystream.
    remote_key: Option<SrtpKeyMaterial>,
    direction: Direction,
}

impl MediaNegotiation {
    /// A negotiation with a session id drawn from `rng` (an identifier,
    /// not a secret: a seeded RNG makes tests exact).
    pub fn new<R: Rng + ?Sized>(settings: MediaSettings, rng: &mut R) -> Self {
        MediaNegotiation {
            settings,
            session_id: rng.random_range(1..(1u64 << 62)),
            last_local: None,
            offer_answered: false,
            pending_offer: None,
            keys: Vec::new(),
            remote_key: None,
            direction: Direction::SendRecv,
        }
    }

    /// The settings.
    pub fn settings(&self) -> &MediaSettings {
        &self.settings
    }

    /// Sets the direction the next offer or answer asks for:
    /// `sendonly` puts the peer on hold, `inactive` holds both ways,
    /// `sendrecv` resumes.
    pub fn set_direction(&mut self, direction: Direction) {
        self.direction = direction;
    }

    /// Sets the local RTP port for the next offer or answer.
    pub fn set_port(&mut self, port: u16) {
        self.settings.port = port;
    }

    /// The description this side sent last, if any.
    pub fn local_description(&self) -> Option<&SessionDescription> {
        self.last_local.as_ref()
    }

    /// Whether an offer awaits its answer.
    pub fn is_offer_pending(&self) -> bool {
        self.pending_offer.is_some()
    }

    /// Makes an offer, or a re-offer once a session is up.
    pub fn create_offer(&mut self) -> Result<SessionDescription, NegotiationError> {
        if self.pending_offer.is_some() {
            return Err(NegotiationError::OfferPending);
        }
        // Within a session the audio keeps the profile it was agreed on
        // (RFC 3264 §8: a re-offer changes only what should change): a
        // peer that called with RTP/SAVP refuses, or answers in SAVP to, a
        // hold offered in RTP/AVP, and the reverse.
        let agreed = self
            .last_local
            .as_ref()
            .and_then(|d| d.media.get(audio_index(d)))
            .filter(|m| m.kind == MediaKind::Audio && m.port != 0)
            .map(|m| m.protocol.clone())
            .filter(|p| matches!(p, Protocol::RtpAvp | Protocol::RtpSavp));
        let protocol = match (agreed, self.settings.srtp) {
            (Some(agreed), _) => agreed,
            (None, SrtpPolicy::Mandatory) => Protocol::RtpSavp,
            (None, SrtpPolicy::BestEffort | SrtpPolicy::Disabled) => Protocol::RtpAvp,
        };
        let mut codecs: Vec<(u8, Codec)> = self
            .settings
            .codecs
            .iter()
            .map(|&c| (c.offered_payload_type(), c))
            .collect();
        codecs.dedup_by_key(|(pt, _)| *pt);
        // One telephone-event per audio clock rate offered, so the events
        // can run on the codec's clock whichever codec the peer picks.
        let mut telephone_events: Vec<(u8, u32)> = Vec::new();
        if self.settings.telephone_event {
            for (_, codec) in &codecs {
                let rate = codec.clock_rate();
                let pt = if rate == 48_000 {
                    TELEPHONE_EVENT_48K_PAYLOAD_TYPE
                } else {
                    TELEPHONE_EVENT_PAYLOAD_TYPE
                };
                if !telephone_events.contains(&(pt, rate)) && matches!(rate, 8000 | 48_000) {
                    telephone_events.push((pt, rate));
                }
            }
        }
        let mut crypto = Vec::new();
        if self.settings.srtp != SrtpPolicy::Disabled {
            let suites = self.settings.crypto_suites.clone();
            for (tag, suite) in (1u32..).zip(suites) {
                crypto.push(self.key(suite)?.to_crypto_attribute(tag));
            }
        }
        let media = self.audio_section(
            protocol,
            &codecs,
            &telephone_events,
            self.direction,
            self.settings.rtcp_mux,
            crypto,
        );
        let offer = self.stamp(media);
        debug!(version = offer.origin.session_version, "sdp offer made");
        self.pending_offer = Some(offer.clone());
        Ok(offer)
    }

    /// Forgets a pending offer, as when it was refused or timed out; the
    /// session stays as it was before the offer.
    pub fn cancel_offer(&mut self) {
        self.pending_offer = None;
    }

    /// Reads the answer to the pending offer.
    pub fn handle_answer(
        &mut self,
        answer: &SessionDescription,
    ) -> Result<NegotiatedAudio, NegotiationError> {
        let offer = self
            .pending_offer
            .take()
            .ok_or(NegotiationError::NoPendingOffer)?;
        if offer.media.len() != answer.media.len() {
            return Err(NegotiationError::MediaCountMismatch {
                offered: offer.media.len(),
                answered: answer.media.len(),
            });
        }
        let at = audio_index(&offer);
        let (ours, theirs) = (&offer.media[at], &answer.media[at]);
        let result = self.read_answer(ours, theirs, answer);
        // The offer was made either way: later descriptions build on it.
        self.last_local = Some(offer);
        self.offer_answered = true;
        result
    }

    /// Reads another answer to the offer answered last. An INVITE that
    /// forked is answered by each callee that responds with SDP, each in
    /// its own dialog (RFC 3261 §13.2.2.4, §13.3.1.1); the session follows
    /// the one whose answer the call takes, e.g. the 2xx after another
    /// callee's early media.
    ///
    /// # Errors
    ///
    /// [`NegotiationError::NoPendingOffer`] when no offer of ours was
    /// answered last (an offer is open, or we answered since), else as
    /// [`MediaNegotiation::handle_answer`].
    pub fn handle_forked_answer(
        &mut self,
        answer: &SessionDescription,
    ) -> Result<NegotiatedAudio, NegotiationError> {
        if self.pending_offer.is_some() || !self.offer_answered {
            return Err(NegotiationError::NoPendingOffer);
        }
        self.pending_offer = self.last_local.clone();
        self.handle_answer(answer)
    }

    /// Answers a remote offer (initial or re-offer).
    pub fn handle_offer(&mut self, offer: &SessionDescription) -> Result<Answer, NegotiationError> {
        if self.pending_offer.is_some() {
            return Err(NegotiationError::OfferPending);
        }
        let mut sections = Vec::with_capacity(offer.media.len());
        let mut audio = None;
        for media in &offer.media {
            let accepted = if audio.is_none() {
                self.accept_stream(media, offer)?
            } else {
                None
            };
            match accepted {
                Some((section, negotiated)) => {
                    sections.push(section);
                    audio = Some(negotiated);
                }
                None => {
                    debug!(kind = media.kind.as_str(), "media stream refused");
                    sections.push(MediaDescription::new(
                        media.kind.clone(),
                        0,
                        media.protocol.clone(),
                        media.formats.clone(),
                    ));
                }
            }
        }
        // Within a session, answering the stream with port 0 would end the
        // audio the peer thinks it changed; refusing the offer keeps both
        // sides on the session they had. (An initial offer answered so is
        // for the caller to refuse, and a peer that itself set the port to
        // 0 removes the stream.)
        let offered_audio = offer
            .media
            .iter()
            .any(|m| m.kind == MediaKind::Audio && m.port != 0);
        // Nor may a re-offer move the call to media we do not take (fax,
        // T.38 in `m=image`, which a gateway takes a 2xx for as done, and
        // stops its audio): refused, the call stays on audio.
        let offered_other = offer
            .media
            .iter()
            .any(|m| m.kind != MediaKind::Audio && m.port != 0);
        if audio.is_none() && (offered_audio || offered_other) && self.last_local.is_some() {
            return Err(NegotiationError::ReofferRefused);
        }
        let description = self.stamp_sections(sections);
        Ok(Answer { description, audio })
    }

    // --- private helpers --------------------------------------------------

    fn key(&mut self, suite: SrtpSuite) -> Result<SrtpKeyMaterial, SrtpError> {
        if let Some(key) = self.keys.iter().find(|k| k.suite() == suite) {
            return Ok(key.clone());
        }
        let key = SrtpKeyMaterial::generate(suite)?;
        self.keys.push(key.clone());
        Ok(key)
    }

    /// The audio `m=` section this side sends.
    fn audio_section(
        &self,
        protocol: Protocol,
        codecs: &[(u8, Codec)],
        telephone_events: &[(u8, u32)],
        direction: Direction,
        rtcp_mux: bool,
        crypto: Vec<CryptoAttribute>,
    ) -> MediaDescription {
        let mut formats: Vec<String> = codecs.iter().map(|(pt, _)| pt.to_string()).collect();
        let mut attributes = Vec::new();
        for &(pt, codec) in codecs {
            attributes.push(Attribute::RtpMap(codec.rtpmap(pt)));
            if let Some(parameters) = codec.fmtp() {
                attributes.push(Attribute::Fmtp(Fmtp {
                    format: pt.to_string(),
                    parameters: parameters.to_owned(),
                }));
            }
        }
        for &(pt, clock_rate) in telephone_events {
            formats.push(pt.to_string());
            attributes.push(Attribute::RtpMap(RtpMap {
                payload_type: pt,
                encoding: "telephone-event".to_owned(),
                clock_rate,
                channels: None,
            }));
            attributes.push(Attribute::Fmtp(Fmtp {
                format: pt.to_string(),
                parameters: "0-16".to_owned(),
            }));
        }
        attributes.push(Attribute::Ptime(self.settings.ptime));
        attributes.push(Attribute::MaxPtime(self.settings.max_ptime));
        attributes.push(Attribute::Direction(direction));
        if rtcp_mux {
            attributes.push(Attribute::RtcpMux);
        }
        attributes.extend(crypto.into_iter().map(Attribute::Crypto));
        MediaDescription {
            attributes,
            ..MediaDescription::new(MediaKind::Audio, self.settings.port, protocol, formats)
        }
    }

    /// Our offer's description around its audio section. Within a session
    /// every m-line of the last description keeps its place (RFC 3264 §8:
    /// a re-offer has as many, in the same order), the others refused with
    /// port 0: a peer that offered video as well reads our audio where it
    /// was, not as its first line.
    fn stamp(&mut self, media: MediaDescription) -> SessionDescription {
        let sections = match &self.last_local {
            Some(last) if last.media.len() > 1 => {
                let at = audio_index(last);
                last.media
                    .iter()
                    .enumerate()
                    .map(|(i, m)| {
                        if i == at {
                            media.clone()
                        } else {
                            MediaDescription::new(
                                m.kind.clone(),
                                0,
                                m.protocol.clone(),
                                m.formats.clone(),
                            )
                        }
                    })
                    .collect()
            }
            _ => vec![media],
        };
        self.stamp_sections(sections)
    }

    /// Wraps media sections in a session description whose version grows
    /// by one when it differs from the last one sent (RFC 3264 §8).
    fn stamp_sections(&mut self, media: Vec<MediaDescription>) -> SessionDescription {
        let mut description = SessionDescription::new(Origin {
            username: self.settings.username.clone(),
            session_id: self.session_id,
            session_version: 1,
            address: Address::Ip(self.settings.address),
        });
        description.connection = Some(Connection::new(self.settings.address));
        description.media = media;
        if let Some(last) = &self.last_local {
            description.origin.session_version = last.origin.session_version;
            if &description != last {
                description.origin.session_version = last.origin.session_version.wrapping_add(1);
            }
        }
        self.last_local = Some(description.clone());
        self.offer_answered = false;
        description
    }

    fn read_answer(
        &mut self,
        ours: &MediaDescription,
        theirs: &MediaDescription,
        answer: &SessionDescription,
    ) -> Result<NegotiatedAudio, NegotiationError> {
        if theirs.port == 0 {
            return Err(NegotiationError::AudioRejected);
        }
        if theirs.protocol != ours.protocol {
            return Err(NegotiationError::ProtocolMismatch);
        }
        // Both sides send the first codec of the answer that was offered.
        let (send_payload_type, codec) = theirs
            .payload_types()
            .find_map(|pt| {
                let codec = codec_of(theirs, pt).or_else(|| {
                    // A dynamic number without rtpmap: read it as offered.
                    theirs
                        .rtpmap(pt)
                        .is_none()
                        .then(|| codec_of(ours, pt))
                        .flatten()
                })?;
                self.settings.codecs.contains(&codec).then_some((pt, codec))
            })
            .ok_or(NegotiationError::NoCommonCodec)?;
        let receive_payload_type = ours
            .payload_types()
            .find(|&pt| codec_of(ours, pt) == Some(codec))
            .ok_or(NegotiationError::NoCommonCodec)?;
        // Events run at the rate the answer chose, both ways: our number
        // for that rate, not the one at the codec's rate.
        let answered_event = telephone_event_of(theirs, codec.clock_rate());
        let telephone_event_rate = answered_event.map_or(codec.clock_rate(), |(_, rate)| rate);
        let receive_telephone_event =
            answered_event.and_then(|(_, rate)| telephone_event_at(ours, rate));
        let send_telephone_event = receive_telephone_event.and(answered_event.map(|(pt, _)| pt));

        let srtp = match theirs.crypto().next() {
            Some(answered) if self.settings.srtp != SrtpPolicy::Disabled => {
                let offered = ours
                    .crypto()
                    .find(|c| c.tag == answered.tag && c.suite == answered.suite)
                    .ok_or(NegotiationError::CryptoMismatch)?;
                let local = SrtpKeyMaterial::from_crypto_attribute(offered)?;
                let remote = SrtpKeyMaterial::from_crypto_attribute(answered)
                    .map_err(|_| NegotiationError::CryptoMismatch)?;
                Some(NegotiatedSrtp { local, remote })
            }
            _ if self.settings.srtp == SrtpPolicy::Mandatory => {
                return Err(NegotiationError::SrtpRequired);
            }
            _ => None,
        };
        let remote_ip = connection_ip(theirs, answer)?;
        // Only an answer taken sets the peer's key: one refused here leaves
        // the session (and what a later re-offer compares with) as it was.
        if let Some(srtp) = &srtp {
            self.remote_key = Some(srtp.remote.clone());
        }
        let rtcp_mux = self.settings.rtcp_mux && ours.is_rtcp_mux() && theirs.is_rtcp_mux();
        let local = ours.direction();
        let remote = theirs.effective_direction(answer);
        let direction = Direction::from_flags(
            local.sends() && remote.receives() && !remote_ip.is_unspecified(),
            local.receives() && remote.sends(),
        );
        Ok(NegotiatedAudio {
            remote_rtp: SocketAddr::new(remote_ip, theirs.port),
            remote_rtcp: rtcp_address(theirs, remote_ip, rtcp_mux),
            codec,
            send_payload_type,
            receive_payload_type,
            remote_fmtp: theirs.fmtp(send_payload_type).map(str::to_owned),
            send_telephone_event,
            receive_telephone_event,
            telephone_event_rate,
            ptime: self.send_ptime(theirs, codec),
            direction,
            rtcp_mux,
            srtp,
        })
    }

    /// The answer section for an offered stream, or `None` to refuse it.
    fn accept_stream(
        &mut self,
        offered: &MediaDescription,
        offer: &SessionDescription,
    ) -> Result<Option<(MediaDescription, NegotiatedAudio)>, NegotiationError> {
        if offered.kind != MediaKind::Audio || offered.port == 0 {
            return Ok(None);
        }
        let policy = self.settings.srtp;
        let secure_profile = match offered.protocol {
            Protocol::RtpAvp => false,
            Protocol::RtpSavp => true,
            _ => return Ok(None),
        };
        if secure_profile && policy == SrtpPolicy::Disabled {
            return Ok(None);
        }
        // The answerer's preference among the offer's codecs.
        let mut codecs: Vec<(u8, Codec)> = Vec::new();
        for &wanted in &self.settings.codecs {
            if let Some(pt) = offered
                .payload_types()
                .find(|&pt| codec_of(offered, pt) == Some(wanted))
            {
                codecs.push((pt, wanted));
            }
        }
        let Some(&(payload_type, codec)) = codecs.first() else {
            return Ok(None);
        };
        let offered_event = if self.settings.telephone_event {
            telephone_event_of(offered, codec.clock_rate())
        } else {
            None
        };
        let telephone_event = offered_event.map(|(pt, _)| pt);
        let telephone_event_rate = offered_event.map_or(codec.clock_rate(), |(_, rate)| rate);
        // The first offered crypto line this side can run (RFC 4568 §7.1.1).
        let chosen = if policy == SrtpPolicy::Disabled {
            None
        } else {
            offered.crypto().find_map(|c| {
                let remote = SrtpKeyMaterial::from_crypto_attribute(c).ok()?;
                self.settings
                    .crypto_suites
                    .contains(&remote.suite())
                    .then_some((c.tag, remote))
            })
        };
        if chosen.is_none() && (secure_profile || policy == SrtpPolicy::Mandatory) {
            return Ok(None);
        }
        let Ok(remote_ip) = connection_ip(offered, offer) else {
            return Ok(None);
        };
        let (crypto, srtp) = match chosen {
            Some((tag, remote)) => {
                if self.remote_key.as_ref().is_some_and(|k| *k != remote) {
                    self.keys.retain(|k| k.suite() != remote.suite());
                }
                self.remote_key = Some(remote.clone());
                let local = self.key(remote.suite())?;
                (
                    vec![local.to_crypto_attribute(tag)],
                    Some(NegotiatedSrtp { local, remote }),
                )
            }
            None => (Vec::new(), None),
        };
        let remote_direction = offered.effective_direction(offer);
        let direction = Direction::from_flags(
            self.direction.sends() && remote_direction.receives(),
            self.direction.receives() && remote_direction.sends(),
        );
        let rtcp_mux = self.settings.rtcp_mux && offered.is_rtcp_mux();
        // Telephone-events are answered at the rate they were offered.
        let answered_events: Vec<(u8, u32)> = offered_event.into_iter().collect();
        // Only the codec this side sends and plays (RFC 3264 §6.1 lets the
        // answer list one): a peer that sent another codec of a longer
        // answer (§5.1 lets it) would be heard by nobody.
        let section = self.audio_section(
            offered.protocol.clone(),
            &codecs[..1],
            &answered_events,
            direction,
            rtcp_mux,
            crypto,
        );
        let negotiated = NegotiatedAudio {
            remote_rtp: SocketAddr::new(remote_ip, offered.port),
            remote_rtcp: rtcp_address(offered, remote_ip, rtcp_mux),
            codec,
            send_payload_type: payload_type,
            receive_payload_type: payload_type,
            remote_fmtp: offered.fmtp(payload_type).map(str::to_owned),
            send_telephone_event: telephone_event,
            receive_telephone_event: telephone_event,
            telephone_event_rate,
            ptime: self.send_ptime(offered, codec),
            direction: Direction::from_flags(
                direction.sends() && !remote_ip.is_unspecified(),
                direction.receives(),
            ),
            rtcp_mux,
            srtp,
        };
        Ok(Some((section, negotiated)))
    }

    /// The packet time to send with: the peer's `ptime` if it is one this
    /// side can send, within the peer's `maxptime`, in whole 10 ms steps;
    /// for Opus, whose frames are 10, 20, 40 or 60 ms, the longest of those
    /// within it (a peer asking for 30 ms gets 20).
    fn send_ptime(&self, remote: &MediaDescription, codec: Codec) -> u32 {
        let wanted = remote
            .ptime()
            .filter(|p| (10..=self.settings.max_ptime).contains(p))
            .unwrap_or(self.settings.ptime);
        let limit = remote.max_ptime().filter(|&m| m >= 10).unwrap_or(u32::MAX);
        let ptime = (wanted.min(limit) / 10 * 10).max(10);
        match codec {
            Codec::Opus => [60, 40, 20, 10]
                .into_iter()
                .find(|&frame| frame <= ptime)
                .unwrap_or(10),
            _ => ptime,
        }
    }
}

/// Where a description's audio is: its first audio section in use, else its
/// first audio section, else the first.
fn audio_index(description: &SessionDescription) -> usize {
    let audio = |m: &&MediaDescription| m.kind == MediaKind::Audio;
    description
        .media
        .iter()
        .position(|m| audio(&m) && m.port != 0)
        .or_else(|| description.media.iter().position(|m| audio(&m)))
        .unwrap_or(0)
}

/// The codec a payload type of a section stands for.
fn codec_of(media: &MediaDescription, payload_type: u8) -> Option<Codec> {
    match media.rtpmap(payload_type) {
        Some(map) => {
            let name = map.encoding.as_str();
            let mono = map.channels.is_none_or(|c| c == 1);
            if name.eq_ignore_ascii_case("PCMU") && map.clock_rate == 8000 && mono {
                Some(Codec::Pcmu)
            } else if name.eq_ignore_ascii_case("PCMA") && map.clock_rate == 8000 && mono {
                Some(Codec::Pcma)
            } else if name.eq_ignore_ascii_case("opus")
                && map.clock_rate == 48000
                && map.channels == Some(2)
            {
                Some(Codec::Opus)
            } else {
                None
            }
        }
        None => match payload_type {
            0 => Some(Codec::Pcmu),
            8 => Some(Codec::Pcma),
            _ => None,
        },
    }
}

/// The telephone-event payload type of a section and its clock rate: the
/// one at the codec's clock rate, else the one at 8000 Hz.
fn telephone_event_of(media: &MediaDescription, clock_rate: u32) -> Option<(u8, u32)> {
    telephone_event_at(media, clock_rate)
        .map(|pt| (pt, clock_rate))
        .or_else(|| telephone_event_at(media, 8000).map(|pt| (pt, 8000)))
}

/// The telephone-event payload type of a section at exactly `clock_rate`.
fn telephone_event_at(media: &MediaDescription, clock_rate: u32) -> Option<u8> {
    media.payload_types().find(|&pt| {
        media.rtpmap(pt).is_some_and(|map| {
            map.encoding.eq_ignore_ascii_case("telephone-event") && map.clock_rate == clock_rate
        })
    })
}

fn connection_ip(
    media: &MediaDescription,
    session: &SessionDescription,
) -> Result<IpAddr, NegotiationError> {
    let connection = media
        .connection
        .as_ref()
        .or(session.connection.as_ref())
        .ok_or(NegotiationError::MissingConnection)?;
    connection
        .address
        .ip()
        .ok_or(NegotiationError::UnresolvedAddress)
}

/// Where RTCP goes: the RTP address when multiplexed, else `a=rtcp`
/// (RFC 3605), else the next port up (RFC 3550 §11).
fn rtcp_address(media: &MediaDescription, ip: IpAddr, rtcp_mux: bool) -> SocketAddr {
    if rtcp_mux {
        return SocketAddr::new(ip, media.port);
    }
    match media.rtcp() {
        Some(rtcp) => SocketAddr::new(
            rtcp.address.as_ref().and_then(Address::ip).unwrap_or(ip),
            rtcp.port,
        ),
        None => SocketAddr::new(ip, media.port.saturating_add(1)),
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv6Addr;

    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(192, 0, 2, last))
    }

    fn negotiation(settings: MediaSettings) -> MediaNegotiation {
        MediaNegotiation::new(settings, &mut StdRng::seed_from_u64(7))
    }

    fn alice() -> MediaNegotiation {
        negotiation(MediaSettings::new(ip(1), 4000))
    }

    fn bob() -> MediaNegotiation {
        negotiation(MediaSettings::new(ip(2), 5000))
    }

    fn remote(text: &str) -> SessionDescription {
        SessionDescription::parse(text).unwrap()
    }

    #[test]
    fn opus_events_run_on_the_opus_clock_end_to_end() {
        let mut a = alice();
        let mut b = bob();
        let offer = a.create_offer().unwrap();
        let answer = b.handle_offer(&offer).unwrap();
        let theirs = answer.audio.unwrap();
        assert_eq!(theirs.codec, Codec::Opus);
        assert_eq!(theirs.send_telephone_event, Some(110));
        let ours = a.handle_answer(&answer.description).unwrap();
        assert_eq!(ours.send_telephone_event, Some(110));
        assert_eq!(
            answer.description.media[0].rtpmap(110).unwrap().clock_rate,
            48000
        );
    }

    /// RFC 4733 §2.5.1.5, RFC 3264 §6.1: a PBX that answers our Opus offer
    /// with events only at 8000 Hz gets its events on its number both ways,
    /// with durations on the 8000 Hz clock, not our 48000 Hz number.
    #[test]
    fn opus_with_events_only_at_8000_hz_uses_them_both_ways() {
        // Best-effort SRTP offers RTP/AVP, which a PBX answers in the clear.
        let mut a = negotiation(MediaSettings::new(ip(1), 4000).with_best_effort_srtp());
        let offer = a.create_offer().unwrap();
        assert!(
            offer.media[0]
                .rtpmap(101)
                .is_some_and(|m| m.clock_rate == 8000)
        );
        let answer = remote(
            "v=0\r\no=pbx 1 1 IN IP4 198.51.100.7\r\ns=-\r\nc=IN IP4 198.51.100.7\r\nt=0 0\r\n\
             m=audio 30000 RTP/AVP 111 101\r\na=rtpmap:111 opus/48000/2\r\n\
             a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\n",
        );
        let n = a.handle_answer(&answer).unwrap();
        assert_eq!(n.codec, Codec::Opus);
        assert_eq!(n.send_telephone_event, Some(101));
        assert_eq!(n.receive_telephone_event, Some(101));
        assert_eq!(n.telephone_event_rate, 8000);
        // Offered to us the same way, we answer the same way.
        let mut b = negotiation(MediaSettings::new(ip(2), 5000).with_best_effort_srtp());
        let answered = b.handle_offer(&answer).unwrap().audio.unwrap();
        assert_eq!(
            (answered.send_telephone_event, answered.telephone_event_rate),
            (Some(101), 8000)
        );
    }

    /// RFC 3711 §3.3.1, §9.1: a re-offer with the peer's unchanged key is
    /// answered with ours unchanged; one with a new key (media moved to
    /// another endpoint, whose receiver starts our roll-over counter at 0)
    /// gets a new key of ours, so no keystream is used twice.
    #[test]
    fn rfc3711_a_new_remote_key_gets_a_new_local_key() {
        let mut rng = StdRng::seed_from_u64(11);
        let mut a = MediaNegotiation::new(MediaSettings::new(ip(1), 4000), &mut rng);
        let mut b = bob();
        let key_of = |answer: &Answer| answer.audio.as_ref().unwrap().srtp.clone().unwrap().local;
        let first = key_of(&b.handle_offer(&a.create_offer().unwrap()).unwrap());
        a.handle_answer(&b.last_local.clone().unwrap()).unwrap();
        let again = key_of(&b.handle_offer(&a.create_offer().unwrap()).unwrap());
        assert_eq!(again, first, "the same peer key keeps ours");
        let mut c = MediaNegotiation::new(MediaSettings::new(ip(3), 6000), &mut rng);
        let moved = key_of(&b.handle_offer(&c.create_offer().unwrap()).unwrap());
        assert_ne!(moved, first, "a new peer key gets a new one of ours");
    }

    /// A plain offer from a desk phone: PCMA, PCMU, telephone-event.
    fn plain_offer(extra: &str) -> SessionDescription {
        remote(&format!(
            "v=0\r\no=phone 1 1 IN IP4 198.51.100.7\r\ns=-\r\nc=IN IP4 198.51.100.7\r\nt=0 0\r\n\
             m=audio 30000 RTP/AVP 8 0 101\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\n{extra}"
        ))
    }

    fn plain(settings: MediaSettings) -> MediaSettings {
        let mut settings = settings;
        settings.dangerous().disable_srtp();
        settings
    }

    #[test]
    fn rfc3264_5_initial_offer_lists_codecs_in_preference_order() {
        let offer = alice().create_offer().unwrap();
        let m = &offer.media[0];
        assert_eq!(m.protocol, Protocol::RtpSavp);
        // A telephone-event per clock rate: Opus's 48 kHz and G.711's 8 kHz.
        assert_eq!(m.formats, ["111", "0", "8", "110", "101"]);
        assert_eq!(m.rtpmap(111).unwrap().channels, Some(2));
        assert_eq!(m.rtpmap(0).unwrap().encoding, "PCMU");
        assert_eq!(m.rtpmap(110).unwrap().encoding, "telephone-event");
        assert_eq!(m.rtpmap(110).unwrap().clock_rate, 48000);
        assert_eq!(m.rtpmap(101).unwrap().encoding, "telephone-event");
        assert_eq!(m.rtpmap(101).unwrap().clock_rate, 8000);
        assert_eq!(m.fmtp(101), Some("0-16"));
        assert_eq!(m.fmtp(111), Some("minptime=10;useinbandfec=1"));
        assert_eq!(m.ptime(), Some(20));
        assert_eq!(m.direction(), Direction::SendRecv);
        assert!(m.is_rtcp_mux());
        let suites: Vec<_> = m.crypto().map(|c| (c.tag, c.suite.clone())).collect();
        assert_eq!(suites.len(), 3);
        assert_eq!(
            suites[0],
            (1, SrtpSuite::AesCm128HmacSha1_80.crypto_suite())
        );
        assert_eq!(suites[1], (2, SrtpSuite::AeadAes128Gcm.crypto_suite()));
        // The offer survives the wire.
        assert_eq!(
            SessionDescription::parse(&offer.to_string()).unwrap(),
            offer
        );
    }

    #[test]
    fn rfc3264_6_1_answerer_prefers_its_own_order_among_offered_codecs() {
        let mut b = negotiation(
            plain(MediaSettings::new(ip(2), 5000)).with_codecs([Codec::Pcmu, Codec::Pcma]),
        );
        let answer = b.handle_offer(&plain_offer("")).unwrap();
        let m = &answer.description.media[0];
        // The answer lists the one codec chosen (and telephone-event): a
        // peer may send any listed codec, and only this one is played.
        assert_eq!(m.formats, ["0", "101"]);
        let audio = answer.audio.unwrap();
        assert_eq!(audio.codec, Codec::Pcmu);
        assert_eq!(
            (audio.send_payload_type, audio.receive_payload_type),
            (0, 0)
        );
        assert_eq!(audio.send_telephone_event, Some(101));
        assert_eq!(audio.remote_rtp, "198.51.100.7:30000".parse().unwrap());
    }

    #[test]
    fn rfc3264_6_1_offerer_sends_the_answers_first_codec() {
        let mut a = negotiation(plain(MediaSettings::new(ip(1), 4000)));
        let offer = a.create_offer().unwrap();
        let answer = remote(
            "v=0\r\no=gw 5 5 IN IP4 198.51.100.9\r\ns=-\r\nc=IN IP4 198.51.100.9\r\nt=0 0\r\n\
             m=audio 7000 RTP/AVP 8 0\r\na=ptime:30\r\n",
        );
        let audio = a.handle_answer(&answer).unwrap();
        assert_eq!(audio.codec, Codec::Pcma);
        assert_eq!(audio.send_payload_type, 8);
        assert_eq!(audio.ptime, 30);
        assert_eq!(audio.send_telephone_event, None);
        assert!(!audio.rtcp_mux);
        assert_eq!(audio.remote_rtcp, "198.51.100.9:7001".parse().unwrap());
        assert_eq!(audio.srtp, None);
        assert_eq!(offer.media[0].protocol, Protocol::RtpAvp);
    }

    #[test]
    fn rfc3264_6_1_dynamic_payload_types_follow_the_offer_numbers() {
        let offer = remote(
            "v=0\r\no=x 1 1 IN IP4 198.51.100.7\r\ns=-\r\nc=IN IP4 198.51.100.7\r\nt=0 0\r\n\
             m=audio 30000 RTP/AVP 96 97 0\r\na=rtpmap:96 OPUS/48000/2\r\na=fmtp:96 useinbandfec=1\r\n\
             a=rtpmap:97 telephone-event/48000\r\na=rtpmap:98 telephone-event/8000\r\n",
        );
        let mut b = negotiation(plain(MediaSettings::new(ip(2), 5000)));
        let answer = b.handle_offer(&offer).unwrap();
        let audio = answer.audio.unwrap();
        assert_eq!(audio.codec, Codec::Opus);
        assert_eq!(audio.send_payload_type, 96);
        assert_eq!(audio.remote_fmtp.as_deref(), Some("useinbandfec=1"));
        // 98 is not in the m= line, so only 97 counts, at the codec's rate.
        assert_eq!(audio.send_telephone_event, Some(97));
        let m = &answer.description.media[0];
        assert_eq!(m.formats, ["96", "97"]);
        assert_eq!(m.rtpmap(96).unwrap().encoding, "opus");
        assert_eq!(m.rtpmap(97).unwrap().clock_rate, 48000);
    }

    #[test]
    fn rfc3264_6_stream_without_common_codec_is_refused_with_port_0() {
        let offer = remote(
            "v=0\r\no=x 1 1 IN IP4 198.51.100.7\r\ns=-\r\nc=IN IP4 198.51.100.7\r\nt=0 0\r\n\
             m=audio 30000 RTP/AVP 18 9\r\n",
        );
        let mut b = negotiation(plain(MediaSettings::new(ip(2), 5000)));
        let answer = b.handle_offer(&offer).unwrap();
        assert_eq!(answer.audio, None);
        let m = &answer.description.media[0];
        assert_eq!(m.port, 0);
        assert_eq!(m.formats, ["18", "9"]);
    }

    #[test]
    fn rfc3264_6_video_and_unknown_protocols_are_refused_with_port_0() {
        let offer = remote(
            "v=0\r\no=x 1 1 IN IP4 198.51.100.7\r\ns=-\r\nc=IN IP4 198.51.100.7\r\nt=0 0\r\n\
             m=video 30002 RTP/AVP 99\r\na=rtpmap:99 H264/90000\r\n\
             m=audio 30004 UDP/TLS/RTP/SAVPF 0\r\n\
             m=audio 30000 RTP/AVP 0\r\n\
             m=audio 30006 RTP/AVP 8\r\n",
        );
        let mut b = negotiation(plain(MediaSettings::new(ip(2), 5000)));
        let answer = b.handle_offer(&offer).unwrap();
        let ports: Vec<u16> = answer.description.media.iter().map(|m| m.port).collect();
        assert_eq!(ports, [0, 0, 5000, 0]);
        assert_eq!(answer.description.media[0].kind, MediaKind::Video);
        assert_eq!(
            answer.description.media[1].protocol,
            Protocol::Other("UDP/TLS/RTP/SAVPF".into())
        );
        assert_eq!(answer.audio.unwrap().remote_rtp.port(), 30000);

        // RFC 3264 §8: our re-offer (hold) keeps all four lines in their
        // order, audio where it was, and the answer is read there.
        b.set_direction(Direction::SendOnly);
        let hold = b.create_offer().unwrap();
        let kinds: Vec<(&MediaKind, u16)> = hold.media.iter().map(|m| (&m.kind, m.port)).collect();
        assert_eq!(
            kinds,
            [
                (&MediaKind::Video, 0),
                (&MediaKind::Audio, 0),
                (&MediaKind::Audio, 5000),
                (&MediaKind::Audio, 0)
            ]
        );
        assert_eq!(hold.media[2].direction(), Direction::SendOnly);
        let held = remote(
            "v=0\r\no=x 1 2 IN IP4 198.51.100.7\r\ns=-\r\nc=IN IP4 198.51.100.7\r\nt=0 0\r\n\
             m=video 0 RTP/AVP 99\r\n\
             m=audio 0 UDP/TLS/RTP/SAVPF 0\r\n\
             m=audio 30010 RTP/AVP 0\r\na=recvonly\r\n\
             m=audio 0 RTP/AVP 8\r\n",
        );
        let audio = b.handle_answer(&held).unwrap();
        assert_eq!(audio.remote_rtp.port(), 30010);
        assert_eq!(audio.direction, Direction::SendOnly);
    }

    #[test]
    fn rfc3264_6_1_sendonly_offer_is_answered_recvonly() {
        let mut b = negotiation(plain(MediaSettings::new(ip(2), 5000)));
        let answer = b.handle_offer(&plain_offer("a=sendonly\r\n")).unwrap();
        assert_eq!(answer.description.media[0].direction(), Direction::RecvOnly);
        assert_eq!(answer.audio.unwrap().direction, Direction::RecvOnly);
    }

    #[test]
    fn rfc3264_6_1_inactive_offer_is_answered_inactive() {
        let mut b = negotiation(plain(MediaSettings::new(ip(2), 5000)));
        let answer = b.handle_offer(&plain_offer("a=inactive\r\n")).unwrap();
        assert_eq!(answer.description.media[0].direction(), Direction::Inactive);
        assert_eq!(answer.audio.unwrap().direction, Direction::Inactive);
    }

    #[test]
    fn rfc3264_6_1_recvonly_offer_is_answered_sendonly() {
        let mut b = negotiation(plain(MediaSettings::new(ip(2), 5000)));
        let answer = b.handle_offer(&plain_offer("a=recvonly\r\n")).unwrap();
        assert_eq!(answer.description.media[0].direction(), Direction::SendOnly);
    }

    #[test]
    fn rfc3264_6_1_session_level_direction_applies_to_the_stream() {
        let offer = remote(
            "v=0\r\no=x 1 1 IN IP4 198.51.100.7\r\ns=-\r\nc=IN IP4 198.51.100.7\r\nt=0 0\r\na=sendonly\r\n\
             m=audio 30000 RTP/AVP 0\r\n",
        );
        let mut b = negotiation(plain(MediaSettings::new(ip(2), 5000)));
        let answer = b.handle_offer(&offer).unwrap();
        assert_eq!(answer.description.media[0].direction(), Direction::RecvOnly);
    }

    #[test]
    fn rfc3264_8_4_hold_and_resume_by_re_offer_increment_the_version() {
        let (mut a, mut b) = (alice(), bob());
        let offer = a.create_offer().unwrap();
        let answer = b.handle_offer(&offer).unwrap();
        a.handle_answer(&answer.description).unwrap();

        // Hold: Alice re-offers sendonly; Bob answers recvonly.
        a.set_direction(Direction::SendOnly);
        let hold = a.create_offer().unwrap();
        assert_eq!(hold.origin.session_id, offer.origin.session_id);
        assert_eq!(
            hold.origin.session_version,
            offer.origin.session_version + 1
        );
        assert_eq!(hold.media[0].direction(), Direction::SendOnly);
        let held = b.handle_offer(&hold).unwrap();
        assert_eq!(held.description.media[0].direction(), Direction::RecvOnly);
        assert_eq!(
            held.description.origin.session_version,
            answer.description.origin.session_version + 1
        );
        assert_eq!(held.audio.unwrap().direction, Direction::RecvOnly);
        assert_eq!(
            a.handle_answer(&held.description).unwrap().direction,
            Direction::SendOnly
        );

        // Resume.
        a.set_direction(Direction::SendRecv);
        let resume = a.create_offer().unwrap();
        assert_eq!(
            resume.origin.session_version,
            offer.origin.session_version + 2
        );
        let resumed = b.handle_offer(&resume).unwrap();
        assert_eq!(
            a.handle_answer(&resumed.description).unwrap().direction,
            Direction::SendRecv
        );
    }

    #[test]
    fn rfc3264_8_unchanged_re_offer_keeps_the_version_and_keys() {
        let (mut a, mut b) = (alice(), bob());
        let offer = a.create_offer().unwrap();
        let answer = b.handle_offer(&offer).unwrap();
        let first = a.handle_answer(&answer.description).unwrap();
        let again = a.create_offer().unwrap();
        assert_eq!(again, offer);
        let answer_again = b.handle_offer(&again).unwrap();
        assert_eq!(answer_again.description, answer.description);
        assert_eq!(a.handle_answer(&answer_again.description).unwrap(), first);
    }

    #[test]
    fn rfc3261_13_2_2_4_each_callee_of_a_forked_offer_answers_it() {
        let mut a = alice();
        let offer = a.create_offer().unwrap();
        assert!(matches!(
            a.handle_forked_answer(&offer),
            Err(NegotiationError::NoPendingOffer)
        ));
        let early = bob().handle_offer(&offer).unwrap().description;
        let first = a.handle_answer(&early).unwrap();
        let mut carol = negotiation(MediaSettings::new(ip(3), 6000));
        let answer = carol.handle_offer(&offer).unwrap().description;
        let second = a.handle_forked_answer(&answer).unwrap();
        assert_eq!(first.remote_rtp.port(), 5000);
        assert_eq!(second.remote_rtp, SocketAddr::new(ip(3), 6000));
        // Our own description is still the offer both answered.
        assert_eq!(a.local_description(), Some(&offer));
        // Once we answer an offer of theirs, none of ours is answered last.
        let re_offer = carol.create_offer().unwrap();
        a.handle_offer(&re_offer).unwrap();
        assert!(a.handle_forked_answer(&answer).is_err());
    }

    #[test]
    fn rfc3264_8_3_2_re_offer_with_new_port_is_a_change() {
        let (mut a, mut b) = (alice(), bob());
        let offer = a.create_offer().unwrap();
        a.handle_answer(&b.handle_offer(&offer).unwrap().description)
            .unwrap();
        a.set_port(4100);
        let moved = a.create_offer().unwrap();
        assert_eq!(
            moved.origin.session_version,
            offer.origin.session_version + 1
        );
        let audio = b.handle_offer(&moved).unwrap().audio.unwrap();
        assert_eq!(audio.remote_rtp.port(), 4100);
    }

    #[test]
    fn rfc3264_8_4_old_style_hold_address_stops_sending() {
        let mut b = negotiation(plain(MediaSettings::new(ip(2), 5000)));
        let offer = remote(
            "v=0\r\no=x 1 2 IN IP4 198.51.100.7\r\ns=-\r\nc=IN IP4 0.0.0.0\r\nt=0 0\r\nm=audio 30000 RTP/AVP 0\r\n",
        );
        let audio = b.handle_offer(&offer).unwrap().audio.unwrap();
        assert_eq!(audio.remote_rtp.ip(), HOLD_ADDRESS);
        assert!(!audio.direction.sends());
        assert!(audio.direction.receives());
    }

    #[test]
    fn rfc3264_4_second_offer_while_pending_is_refused() {
        let mut a = alice();
        a.create_offer().unwrap();
        assert_eq!(a.create_offer(), Err(NegotiationError::OfferPending));
        assert_eq!(
            a.handle_offer(&plain_offer("")),
            Err(NegotiationError::OfferPending)
        );
        a.cancel_offer();
        assert!(a.create_offer().is_ok());
        let mut b = bob();
        assert_eq!(
            b.handle_answer(&plain_offer("")),
            Err(NegotiationError::NoPendingOffer)
        );
    }

    #[test]
    fn rfc3264_6_answer_with_wrong_section_count_is_an_error() {
        let mut a = negotiation(plain(MediaSettings::new(ip(1), 4000)));
        a.create_offer().unwrap();
        let answer = remote("v=0\r\no=x 1 1 IN IP4 198.51.100.7\r\ns=-\r\nt=0 0\r\n");
        assert_eq!(
            a.handle_answer(&answer),
            Err(NegotiationError::MediaCountMismatch {
                offered: 1,
                answered: 0
            })
        );
    }

    #[test]
    fn rfc3264_6_refused_audio_is_reported() {
        let mut a = negotiation(plain(MediaSettings::new(ip(1), 4000)));
        a.create_offer().unwrap();
        let answer = remote(
            "v=0\r\no=x 1 1 IN IP4 198.51.100.7\r\ns=-\r\nc=IN IP4 198.51.100.7\r\nt=0 0\r\nm=audio 0 RTP/AVP 0\r\n",
        );
        assert_eq!(
            a.handle_answer(&answer),
            Err(NegotiationError::AudioRejected)
        );
    }

    #[test]
    fn rfc3264_5_1_ptime_follows_the_receivers_wish_within_maxptime() {
        let mut b = negotiation(plain(MediaSettings::new(ip(2), 5000)));
        let audio = b
            .handle_offer(&plain_offer("a=ptime:40\r\na=maxptime:30\r\n"))
            .unwrap()
            .audio
            .unwrap();
        assert_eq!(audio.ptime, 30);
        let mut b = negotiation(plain(MediaSettings::new(ip(2), 5000)));
        let audio = b
            .handle_offer(&plain_offer("a=ptime:60\r\n"))
            .unwrap()
            .audio
            .unwrap();
        assert_eq!(audio.ptime, 60);
        let mut b = negotiation(plain(MediaSettings::new(ip(2), 5000)));
        let answer = b.handle_offer(&plain_offer("")).unwrap();
        assert_eq!(answer.audio.unwrap().ptime, 20);
        assert_eq!(answer.description.media[0].ptime(), Some(20));
    }

    /// RFC 3264 §8: a re-offer whose audio cannot be taken (here G.722
    /// only) is refused whole, so the session stays; the next description
    /// is still the old version plus one. A peer that sets the port to 0
    /// itself removes the stream and is answered.
    #[test]
    fn rfc3264_8_a_reoffer_without_usable_audio_is_refused_and_the_session_stays() {
        let mut b = negotiation(plain(MediaSettings::new(ip(2), 5000)));
        let first = b.handle_offer(&plain_offer("")).unwrap();
        assert!(first.audio.is_some());
        let version = first.description.origin.session_version;
        let g722 = remote(
            "v=0\r\no=phone 1 2 IN IP4 198.51.100.7\r\ns=-\r\nc=IN IP4 198.51.100.7\r\nt=0 0\r\n\
             m=audio 30002 RTP/AVP 9\r\na=rtpmap:9 G722/8000\r\n",
        );
        assert_eq!(b.handle_offer(&g722), Err(NegotiationError::ReofferRefused));
        let again = b.handle_offer(&plain_offer("a=sendonly\r\n")).unwrap();
        assert!(again.audio.is_some());
        assert_eq!(again.description.origin.session_version, version + 1);
        let removed = remote(
            "v=0\r\no=phone 1 3 IN IP4 198.51.100.7\r\ns=-\r\nc=IN IP4 198.51.100.7\r\nt=0 0\r\n\
             m=audio 0 RTP/AVP 0\r\n",
        );
        let answer = b.handle_offer(&removed).unwrap();
        assert!(answer.audio.is_none());
        assert_eq!(answer.description.media[0].port, 0);
        // A switch to fax (T.38), which the phone does not take, is refused
        // rather than answered with port 0, which a gateway reads as done.
        let mut b = negotiation(plain(MediaSettings::new(ip(2), 5000)));
        b.handle_offer(&plain_offer("")).unwrap();
        let t38 = remote(
            "v=0\r\no=gw 1 2 IN IP4 198.51.100.7\r\ns=-\r\nc=IN IP4 198.51.100.7\r\nt=0 0\r\n\
             m=image 30000 udptl t38\r\na=T38FaxVersion:0\r\n",
        );
        assert_eq!(b.handle_offer(&t38), Err(NegotiationError::ReofferRefused));
    }

    /// Opus frames are 10, 20, 40 or 60 ms: a peer that asks for 30 ms
    /// (Asterisk's `allow=ulaw:30,opus`) or 50 ms gets the longest frame
    /// within it, and the stream can be built; G.711 takes any 10 ms step.
    #[test]
    fn rfc7587_opus_packet_time_is_a_frame_opus_has() {
        let offer = |ptime: u32| {
            remote(&format!(
                "v=0\r\no=phone 1 1 IN IP4 198.51.100.7\r\ns=-\r\nc=IN IP4 198.51.100.7\r\nt=0 0\r\n\
                 m=audio 30000 RTP/AVP 111 0\r\na=rtpmap:111 opus/48000/2\r\na=ptime:{ptime}\r\n"
            ))
        };
        for (asked, sent) in [(30, 20), (50, 40), (80, 60), (120, 60), (20, 20), (10, 10)] {
            let mut b = negotiation(plain(MediaSettings::new(ip(2), 5000)));
            let audio = b.handle_offer(&offer(asked)).unwrap().audio.unwrap();
            assert_eq!(audio.codec, Codec::Opus);
            assert_eq!(audio.ptime, sent, "asked {asked}");
            crate::stream::AudioStream::new(
                crate::test_support::epoch(),
                crate::rtcp::NtpTimestamp::from_unix(std::time::Duration::from_secs(1)),
                &audio,
                crate::stream::AudioStreamConfig::new("b@example.org"),
                &mut StdRng::seed_from_u64(3),
            )
            .unwrap_or_else(|e| panic!("asked {asked}: {e}"));
        }
        let mut b = negotiation(plain(MediaSettings::new(ip(2), 5000)));
        let audio = b
            .handle_offer(&plain_offer("a=ptime:30\r\n"))
            .unwrap()
            .audio
            .unwrap();
        assert_eq!(audio.ptime, 30);
    }

    #[test]
    fn rfc5761_5_1_1_rtcp_mux_only_when_both_sides_list_it() {
        let mut b = negotiation(plain(MediaSettings::new(ip(2), 5000)));
        let answer = b.handle_offer(&plain_offer("a=rtcp-mux\r\n")).unwrap();
        assert!(answer.description.media[0].is_rtcp_mux());
        let audio = answer.audio.unwrap();
        assert!(audio.rtcp_mux);
        assert_eq!(audio.remote_rtcp, audio.remote_rtp);

        let mut b = negotiation(plain(MediaSettings::new(ip(2), 5000)));
        let answer = b.handle_offer(&plain_offer("")).unwrap();
        assert!(!answer.description.media[0].is_rtcp_mux());
        assert!(!answer.audio.unwrap().rtcp_mux);

        let mut b = negotiation(plain(MediaSettings::new(ip(2), 5000)).with_rtcp_mux(false));
        let answer = b.handle_offer(&plain_offer("a=rtcp-mux\r\n")).unwrap();
        assert!(!answer.description.media[0].is_rtcp_mux());
    }

    #[test]
    fn rfc3605_rtcp_attribute_gives_the_rtcp_address() {
        let mut b = negotiation(plain(MediaSettings::new(ip(2), 5000)));
        let audio = b
            .handle_offer(&plain_offer("a=rtcp:40000 IN IP6 2001:db8::9\r\n"))
            .unwrap()
            .audio
            .unwrap();
        assert_eq!(
            audio.remote_rtcp,
            SocketAddr::new(
                IpAddr::V6("2001:db8::9".parse::<Ipv6Addr>().unwrap()),
                40000
            )
        );
    }

    #[test]
    fn rfc4568_7_1_1_answerer_takes_the_first_supported_crypto_line() {
        let mut a = negotiation(MediaSettings::new(ip(1), 4000).with_crypto_suites([
            SrtpSuite::AeadAes128Gcm,
            SrtpSuite::AesCm128HmacSha1_32,
            SrtpSuite::AesCm128HmacSha1_80,
        ]));
        let mut b = negotiation(MediaSettings::new(ip(2), 5000).with_crypto_suites([
            SrtpSuite::AesCm128HmacSha1_80,
            SrtpSuite::AesCm128HmacSha1_32,
        ]));
        let offer = a.create_offer().unwrap();
        let answer = b.handle_offer(&offer).unwrap();
        let crypto: Vec<_> = answer.description.media[0].crypto().collect();
        assert_eq!(crypto.len(), 1);
        // GCM (tag 1) is not supported by Bob; tag 2 is the first he runs.
        assert_eq!(crypto[0].tag, 2);
        assert_eq!(
            crypto[0].suite,
            SrtpSuite::AesCm128HmacSha1_32.crypto_suite()
        );
        let at_bob = answer.audio.unwrap().srtp.unwrap();
        let at_alice = a.handle_answer(&answer.description).unwrap().srtp.unwrap();
        assert_eq!(at_alice.local.suite(), SrtpSuite::AesCm128HmacSha1_32);
        assert_eq!(at_alice.local, at_bob.remote);
        assert_eq!(at_alice.remote, at_bob.local);
        assert_ne!(at_alice.local, at_alice.remote);
    }

    #[test]
    fn rfc4568_each_suite_negotiates_end_to_end() {
        for suite in SrtpSuite::ALL {
            let mut a = negotiation(MediaSettings::new(ip(1), 4000).with_crypto_suites([suite]));
            let mut b = bob();
            let offer = a.create_offer().unwrap();
            let answer = b.handle_offer(&offer).unwrap();
            let keys = a.handle_answer(&answer.description).unwrap().srtp.unwrap();
            assert_eq!(keys.local.suite(), suite);
            assert_eq!(answer.audio.unwrap().srtp.unwrap().remote, keys.local);
        }
    }

    #[test]
    fn rfc4568_mandatory_srtp_refuses_plain_offers() {
        let mut b = bob();
        let answer = b.handle_offer(&plain_offer("")).unwrap();
        assert_eq!(answer.description.media[0].port, 0);
        assert_eq!(answer.audio, None);
    }

    #[test]
    fn rfc4568_mandatory_srtp_refuses_an_answer_without_crypto() {
        let mut a = alice();
        a.create_offer().unwrap();
        let answer = remote(
            "v=0\r\no=x 1 1 IN IP4 198.51.100.7\r\ns=-\r\nc=IN IP4 198.51.100.7\r\nt=0 0\r\nm=audio 7000 RTP/SAVP 0\r\n",
        );
        assert_eq!(
            a.handle_answer(&answer),
            Err(NegotiationError::SrtpRequired)
        );
    }

    #[test]
    fn rfc4568_answer_with_unknown_tag_is_a_crypto_mismatch() {
        let mut a = alice();
        a.create_offer().unwrap();
        let answer = remote(
            "v=0\r\no=x 1 1 IN IP4 198.51.100.7\r\ns=-\r\nc=IN IP4 198.51.100.7\r\nt=0 0\r\nm=audio 7000 RTP/SAVP 0\r\n\
             a=crypto:9 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz\r\n",
        );
        assert_eq!(
            a.handle_answer(&answer),
            Err(NegotiationError::CryptoMismatch)
        );
    }

    #[test]
    fn best_effort_srtp_offers_avp_with_crypto_and_uses_it_when_answered() {
        let mut a = negotiation(MediaSettings::new(ip(1), 4000).with_best_effort_srtp());
        let offer = a.create_offer().unwrap();
        assert_eq!(offer.media[0].protocol, Protocol::RtpAvp);
        assert_eq!(offer.media[0].crypto().count(), 3);
        // A peer that does SRTP keeps a crypto line.
        let mut b = bob();
        let answer = b.handle_offer(&offer).unwrap();
        assert_eq!(answer.description.media[0].protocol, Protocol::RtpAvp);
        assert!(a.handle_answer(&answer.description).unwrap().srtp.is_some());
        assert!(answer.audio.unwrap().srtp.is_some());
    }

    /// RFC 3264 §8: a re-offer keeps the profile the audio was agreed on.
    /// A call that came in as RTP/SAVP is held in RTP/SAVP by a phone whose
    /// own offers are RTP/AVP (best effort), and one that came in as
    /// RTP/AVP is held in RTP/AVP by a phone whose offers are RTP/SAVP.
    #[test]
    fn rfc3264_8_a_reoffer_keeps_the_agreed_profile() {
        let mut savp_caller = alice();
        let mut best_effort = negotiation(MediaSettings::new(ip(2), 5000).with_best_effort_srtp());
        let offer = savp_caller.create_offer().unwrap();
        assert_eq!(offer.media[0].protocol, Protocol::RtpSavp);
        let answer = best_effort.handle_offer(&offer).unwrap();
        savp_caller.handle_answer(&answer.description).unwrap();
        best_effort.set_direction(Direction::SendOnly);
        let hold = best_effort.create_offer().unwrap();
        assert_eq!(hold.media[0].protocol, Protocol::RtpSavp);
        let held = savp_caller.handle_offer(&hold).unwrap();
        assert!(
            best_effort
                .handle_answer(&held.description)
                .unwrap()
                .srtp
                .is_some()
        );

        let mut avp_caller = negotiation(MediaSettings::new(ip(3), 6000).with_best_effort_srtp());
        let mut mandatory = bob();
        let offer = avp_caller.create_offer().unwrap();
        let answer = mandatory.handle_offer(&offer).unwrap();
        assert_eq!(answer.description.media[0].protocol, Protocol::RtpAvp);
        mandatory.set_direction(Direction::SendOnly);
        assert_eq!(
            mandatory.create_offer().unwrap().media[0].protocol,
            Protocol::RtpAvp
        );
    }

    #[test]
    fn best_effort_srtp_falls_back_to_rtp_with_a_plain_peer() {
        let mut a = negotiation(MediaSettings::new(ip(1), 4000).with_best_effort_srtp());
        let offer = a.create_offer().unwrap();
        let mut b = negotiation(plain(MediaSettings::new(ip(2), 5000)));
        let answer = b.handle_offer(&offer).unwrap();
        assert_eq!(answer.description.media[0].crypto().count(), 0);
        assert_eq!(answer.audio.unwrap().srtp, None);
        assert_eq!(a.handle_answer(&answer.description).unwrap().srtp, None);
        // And a best-effort answerer accepts a plain offer.
        let mut c = negotiation(MediaSettings::new(ip(3), 6000).with_best_effort_srtp());
        assert_eq!(
            c.handle_offer(&plain_offer(""))
                .unwrap()
                .audio
                .unwrap()
                .srtp,
            None
        );
    }

    #[test]
    fn disabled_srtp_refuses_savp_offers() {
        let mut b = negotiation(plain(MediaSettings::new(ip(2), 5000)));
        let offer = alice().create_offer().unwrap();
        let answer = b.handle_offer(&offer).unwrap();
        assert_eq!(answer.description.media[0].port, 0);
        assert_eq!(answer.description.media[0].protocol, Protocol::RtpSavp);
    }

    #[test]
    fn host_name_media_address_is_refused_not_resolved() {
        let offer = remote(
            "v=0\r\no=x 1 1 IN IP4 a.example\r\ns=-\r\nc=IN IP4 media.example\r\nt=0 0\r\nm=audio 30000 RTP/AVP 0\r\n",
        );
        let mut b = negotiation(plain(MediaSettings::new(ip(2), 5000)));
        assert_eq!(b.handle_offer(&offer).unwrap().description.media[0].port, 0);
    }

    /// A whole call in one direction: offer/answer, then a 1 kHz tone
    /// captured at 44.1 kHz, resampled, Opus-encoded, sent as SRTP with the
    /// negotiated keys and payload type over a path that loses a packet,
    /// unprotected, buffered, decoded or concealed, and played at 16 kHz.
    #[test]
    fn negotiated_parameters_carry_a_call_end_to_end() {
        use std::time::Duration;

        use crate::codec;
        use crate::jitter::{JitterBuffer, JitterConfig, JitterPacket, Playout};
        use crate::resample::Resampler;
        use crate::rtp::{RtpPacket, Ssrc};
        use crate::srtp::{SrtpConfig, SrtpContext};
        use crate::test_support::epoch;

        let (mut a, mut b) = (alice(), bob());
        let offer = a.create_offer().unwrap();
        let answer = b.handle_offer(&offer).unwrap();
        let at_alice = a.handle_answer(&answer.description).unwrap();
        let at_bob = answer.audio.unwrap();
        assert_eq!(at_alice.codec, Codec::Opus);
        let keys = at_alice.srtp.clone().unwrap();
        let mut alice_srtp =
            SrtpContext::new(&keys.local, &keys.remote, SrtpConfig::default()).unwrap();
        let keys = at_bob.srtp.clone().unwrap();
        let mut bob_srtp =
            SrtpContext::new(&keys.local, &keys.remote, SrtpConfig::default()).unwrap();

        let mut capture = Resampler::new(44_100, 48_000, at_alice.ptime).unwrap();
        let mut encoder = codec::encoder(at_alice.codec, at_alice.ptime).unwrap();
        let mut decoder = codec::decoder(at_bob.codec, at_bob.ptime).unwrap();
        let mut playback = Resampler::new(48_000, 16_000, at_bob.ptime).unwrap();
        let mut jitter = JitterBuffer::new(
            JitterConfig::default()
                .with_clock(at_bob.codec.clock_rate(), Duration::from_millis(20)),
        )
        .unwrap();

        let start = epoch();
        let frames = 100usize;
        let (mut played, mut concealed) = (Vec::new(), 0);
        for tick in 0..frames + 10 {
            let now = start + Duration::from_millis(20 * tick as u64);
            if tick < frames {
                // Alice: capture, resample, encode, packetize, protect.
                let device: Vec<f32> = (0..882)
                    .map(|i| {
                        (0.4 * (2.0 * std::f64::consts::PI * 1000.0 * (tick * 882 + i) as f64
                            / 44_100.0)
                            .sin()) as f32
                    })
                    .collect();
                let mut pcm = vec![0f32; 960];
                capture.process_f32(&device, &mut pcm).unwrap();
                let pcm: Vec<i16> = pcm.iter().map(|&s| (s * 32767.0) as i16).collect();
                let mut payload = [0u8; 1500];
                let len = encoder.encode(&pcm, &mut payload).unwrap();
                let rtp = RtpPacket::new(
                    at_alice.send_payload_type,
                    tick as u16,
                    (tick * 960) as u32,
                    Ssrc(0xA11CE),
                    payload[..len].to_vec(),
                );
                let srtp = alice_srtp.protect_rtp(&rtp.to_bytes().unwrap()).unwrap();
                // The network loses packet 40 and delays the others a little.
                if tick != 40 {
                    let plain = bob_srtp.unprotect_rtp(&srtp).unwrap();
                    let rtp = RtpPacket::parse(&plain).unwrap();
                    assert_eq!(rtp.payload_type, at_bob.receive_payload_type);
                    let arrival = now + Duration::from_millis(tick as u64 % 7);
                    jitter.push(
                        arrival,
                        JitterPacket::new(
                            rtp.ssrc,
                            rtp.sequence_number,
                            rtp.timestamp,
                            rtp.marker,
                            rtp.payload,
                        ),
                    );
                }
            }
            // Bob's audio tick.
            let mut pcm = [0i16; 960];
            match jitter.pop(now + Duration::from_millis(10)) {
                Playout::Frame(frame) => {
                    decoder.decode(&frame.payload, &mut pcm).unwrap();
                }
                Playout::Conceal => {
                    decoder.conceal(&mut pcm).unwrap();
                    concealed += 1;
                }
                Playout::Silence => {}
            }
            let mut out = [0i16; 320];
            playback.process_i16(&pcm, &mut out).unwrap();
            played.extend_from_slice(&out);
        }
        // Every packet that arrived was played, or dropped while the buffer
        // shrank from its initial delay to what this path needs.
        let stats = jitter.statistics();
        assert_eq!(stats.received, frames as u64 - 1);
        assert_eq!(
            stats.played + stats.dropped_for_shrink,
            stats.received,
            "{stats:?}"
        );
        assert_eq!(stats.late, 0);
        assert!(concealed >= 1);
        // The middle of the call is a 1 kHz tone at 16 kHz.
        let middle = &played[16_000..16_000 + 8_000];
        let crossings = middle
            .windows(2)
            .filter(|w| (w[0] < 0) != (w[1] < 0))
            .count();
        let hz = crossings as f64 / 2.0 / 0.5;
        assert!((hz - 1000.0).abs() < 20.0, "{hz} Hz");
    }

    #[test]
    fn session_id_comes_from_the_injected_rng() {
        let a = alice().create_offer().unwrap();
        let b = alice().create_offer().unwrap();
        assert_eq!(a.origin.session_id, b.origin.session_id);
        assert_eq!(a.origin.session_version, 1);
    }
}
