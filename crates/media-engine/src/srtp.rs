//! SRTP and SRTCP (RFC 3711, RFC 7714) with SDES keys (RFC 4568).
//!
//! [`SrtpContext`] protects what a call sends and unprotects what it
//! receives. The cryptography is webrtc-srtp's (output byte-identical to
//! libsrtp); this module adds what a softphone needs around it:
//!
//! - key material ([`SrtpKeyMaterial`]) drawn from the operating system's
//!   CSPRNG only, carried to and from the SDP `a=crypto` attribute, and
//!   never printed (`Debug` shows `***`);
//! - replay protection switched on for SRTP and SRTCP (the library leaves
//!   it off unless asked), with a window of [`SrtpConfig::replay_window`];
//! - length checks before untrusted bytes reach the library, and typed
//!   errors ([`SrtpError`]) for every way a packet can be refused.
//!
//! The rollover counter (ROC) of each SSRC is tracked by the library as
//! sequence numbers wrap (RFC 3711 §3.3.1). Master key identifiers (MKI)
//! are not supported: a crypto attribute with an MKI is refused.
//!
//! ```
//! use media_engine::rtp::{RtpPacket, Ssrc};
//! use media_engine::srtp::{SrtpConfig, SrtpContext, SrtpKeyMaterial, SrtpSuite};
//!
//! let alice_key = SrtpKeyMaterial::generate(SrtpSuite::AesCm128HmacSha1_80).unwrap();
//! let bob_key = SrtpKeyMaterial::generate(SrtpSuite::AesCm128HmacSha1_80).unwrap();
//! let mut alice = SrtpContext::new(&alice_key, &bob_key, SrtpConfig::default()).unwrap();
//! let mut bob = SrtpContext::new(&bob_key, &alice_key, SrtpConfig::default()).unwrap();
//!
//! let rtp = RtpPacket::new(0, 1, 160, Ssrc(7), vec![0xFF; 160]).to_bytes().unwrap();
//! let srtp = alice.protect_rtp(&rtp).unwrap();
//! assert_eq!(srtp.len(), rtp.len() + 10);
//! assert_eq!(bob.unprotect_rtp(&srtp).unwrap(), rtp);
//! // The same packet again is a replay.
//! assert!(bob.unprotect_rtp(&srtp).is_err());
//! ```

use std::fmt;

use rand::TryRngCore;
use rand::rngs::OsRng;
use thiserror::Error;
use tracing::trace;
use webrtc_srtp::context::Context;
use webrtc_srtp::option::{srtcp_replay_protection, srtp_replay_protection};
use webrtc_srtp::protection_profile::ProtectionProfile;

use crate::rtp::RTP_FIXED_HEADER_LEN;
use crate::sdp::{CryptoAttribute, CryptoSuite, KeyParams};

/// The SRTP crypto suites this crate negotiates and runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SrtpSuite {
    /// AES-128 counter mode, HMAC-SHA1 tag of 80 bits (RFC 4568 §6.2.1).
    AesCm128HmacSha1_80,
    /// AES-128 counter mode, HMAC-SHA1 tag of 32 bits on SRTP, 80 on SRTCP
    /// (RFC 4568 §6.2.2).
    AesCm128HmacSha1_32,
    /// AES-128 GCM with a 128-bit tag (RFC 7714 §12).
    AeadAes128Gcm,
}

impl SrtpSuite {
    /// Every suite, strongest preference first.
    pub const ALL: [SrtpSuite; 3] = [
        SrtpSuite::AeadAes128Gcm,
        SrtpSuite::AesCm128HmacSha1_80,
        SrtpSuite::AesCm128HmacSha1_32,
    ];

    /// Master key length in bytes.
    pub fn key_len(self) -> usize {
        16
    }

    /// Master salt length in bytes.
    pub fn salt_len(self) -> usize {
        match self {
            SrtpSuite::AesCm128HmacSha1_80 | SrtpSuite::AesCm128HmacSha1_32 => 14,
            SrtpSuite::AeadAes128Gcm => 12,
        }
    }

    /// Bytes added to every SRTP packet (authentication tag).
    pub fn rtp_overhead(self) -> usize {
        match self {
            SrtpSuite::AesCm128HmacSha1_80 => 10,
            SrtpSuite::AesCm128HmacSha1_32 => 4,
            SrtpSuite::AeadAes128Gcm => 16,
        }
    }

    /// Bytes added to every SRTCP packet (index and tag).
    pub fn rtcp_overhead(self) -> usize {
        match self {
            SrtpSuite::AesCm128HmacSha1_80 | SrtpSuite::AesCm128HmacSha1_32 => 4 + 10,
            SrtpSuite::AeadAes128Gcm => 4 + 16,
        }
    }

    /// The suite's name in an SDP crypto attribute.
    pub fn crypto_suite(self) -> CryptoSuite {
        match self {
            SrtpSuite::AesCm128HmacSha1_80 => CryptoSuite::AesCm128HmacSha1_80,
            SrtpSuite::AesCm128HmacSha1_32 => CryptoSuite::AesCm128HmacSha1_32,
            SrtpSuite::AeadAes128Gcm => CryptoSuite::AeadAes128Gcm,
        }
    }

    /// The suite named in an SDP crypto attribute, if supported.
    pub fn from_crypto_suite(suite: &CryptoSuite) -> Option<Self> {
        match suite {
            CryptoSuite::AesCm128HmacSha1_80 => Some(SrtpSuite::AesCm128HmacSha1_80),
            CryptoSuite::AesCm128HmacSha1_32 => Some(SrtpSuite::AesCm128HmacSha1_32),
            CryptoSuite::AeadAes128Gcm => Some(SrtpSuite::AeadAes128Gcm),
            CryptoSuite::Other(_) => None,
        }
    }

    fn profile(self) -> ProtectionProfile {
        match self {
            SrtpSuite::AesCm128HmacSha1_80 => ProtectionProfile::Aes128CmHmacSha1_80,
            SrtpSuite::AesCm128HmacSha1_32 => ProtectionProfile::Aes128CmHmacSha1_32,
            SrtpSuite::AeadAes128Gcm => ProtectionProfile::AeadAes128Gcm,
        }
    }
}

/// A master key and master salt for one suite. `Debug` never shows them.
#[derive(Clone, PartialEq, Eq)]
pub struct SrtpKeyMaterial {
    suite: SrtpSuite,
    /// Key followed by salt.
    key_salt: Vec<u8>,
}

impl fmt::Debug for SrtpKeyMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SrtpKeyMaterial")
            .field("suite", &self.suite)
            .field("key_salt", &"***")
            .finish()
    }
}

/// Settings of an [`SrtpContext`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SrtpConfig {
    /// Size of the replay window in packets, for SRTP and SRTCP alike
    /// (RFC 3711 §3.3.2; at least 64).
    pub replay_window: usize,
}

impl Default for SrtpConfig {
    fn default() -> Self {
        SrtpConfig { replay_window: 128 }
    }
}

impl SrtpConfig {
    /// With a different replay window (values below 64 are raised to 64).
    pub fn with_replay_window(mut self, packets: usize) -> Self {
        self.replay_window = packets.max(64);
        self
    }
}

/// Why SRTP could not be set up or a packet was refused.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum SrtpError {
    /// The key and salt are not the suite's lengths.
    #[error("{suite:?} needs {expected} bytes of key and salt, got {actual}")]
    KeyLength {
        /// The suite.
        suite: SrtpSuite,
        /// Bytes it needs.
        expected: usize,
        /// Bytes given.
        actual: usize,
    },
    /// The crypto attribute names a suite this crate does not run.
    #[error("unsupported crypto suite {name}")]
    UnsupportedSuite {
        /// The suite name.
        name: String,
    },
    /// The crypto attribute carries no key, several keys, or an MKI.
    #[error("unsupported key parameters: {reason}")]
    UnsupportedKeyParams {
        /// What is unsupported.
        reason: &'static str,
    },
    /// The two sides' key material is for different suites.
    #[error("local suite {local:?} differs from remote suite {remote:?}")]
    SuiteMismatch {
        /// The local suite.
        local: SrtpSuite,
        /// The remote suite.
        remote: SrtpSuite,
    },
    /// The operating system's random source failed.
    #[error("random source failed")]
    Random,
    /// The packet is too short or its header malformed.
    #[error("malformed packet of {len} bytes")]
    Malformed {
        /// Bytes given.
        len: usize,
    },
    /// The authentication tag does not match: forged, corrupted, or
    /// protected with another key.
    #[error("authentication failed")]
    AuthenticationFailed,
    /// The packet was already received, or is older than the replay
    /// window.
    #[error("replayed packet")]
    Replayed,
    /// The key has protected as many packets as it may (RFC 3711 §9.2).
    #[error("key exhausted: re-key required")]
    KeyExhausted,
    /// Any other failure of the SRTP library.
    #[error("srtp: {message}")]
    Library {
        /// The library's message.
        message: String,
    },
}

impl SrtpKeyMaterial {
    /// Fresh key material from the operating system's CSPRNG.
    pub fn generate(suite: SrtpSuite) -> Result<Self, SrtpError> {
        let mut key_salt = vec![0u8; suite.key_len() + suite.salt_len()];
        OsRng
            .try_fill_bytes(&mut key_salt)
            .map_err(|_| SrtpError::Random)?;
        Ok(SrtpKeyMaterial { suite, key_salt })
    }

    /// Key material from a master key and salt, checking their lengths.
    pub fn new(suite: SrtpSuite, master_key: &[u8], master_salt: &[u8]) -> Result<Self, SrtpError> {
        let mut key_salt = master_key.to_vec();
        key_salt.extend_from_slice(master_salt);
        if master_key.len() != suite.key_len() || master_salt.len() != suite.salt_len() {
            return Err(SrtpError::KeyLength {
                suite,
                expected: suite.key_len() + suite.salt_len(),
                actual: key_salt.len(),
            });
        }
        Ok(SrtpKeyMaterial { suite, key_salt })
    }

    /// Key material from an SDP crypto attribute (RFC 4568 §6.1): a
    /// supported suite and exactly one `inline` key without MKI, and no
    /// session parameter but `WSH`.
    pub fn from_crypto_attribute(crypto: &CryptoAttribute) -> Result<Self, SrtpError> {
        let suite = SrtpSuite::from_crypto_suite(&crypto.suite).ok_or_else(|| {
            SrtpError::UnsupportedSuite {
                name: crypto.suite.as_str().to_owned(),
            }
        })?;
        let key = match crypto.keys.as_slice() {
            [key] => key,
            [] => return Err(SrtpError::UnsupportedKeyParams { reason: "no key" }),
            _ => {
                return Err(SrtpError::UnsupportedKeyParams {
                    reason: "more than one key",
                });
            }
        };
        if key.mki.is_some() {
            return Err(SrtpError::UnsupportedKeyParams { reason: "mki" });
        }
        // Session parameters change how the stream is protected
        // (UNENCRYPTED_SRTCP, KDR...): one we would not honour makes the
        // line unusable (RFC 4568 §6.3), so another line or 488 follows,
        // not a stream the peer cannot read. The window size (WSH) only
        // widens replay protection, which may be ignored.
        if crypto
            .session_params
            .iter()
            .any(|p| !p.get(..4).is_some_and(|w| w.eq_ignore_ascii_case("WSH=")))
        {
            return Err(SrtpError::UnsupportedKeyParams {
                reason: "session parameter",
            });
        }
        let (master_key, master_salt) = key
            .key_salt
            .split_at(suite.key_len().min(key.key_salt.len()));
        Self::new(suite, master_key, master_salt)
    }

    /// The crypto attribute that offers or answers this key under `tag`.
    pub fn to_crypto_attribute(&self, tag: u32) -> CryptoAttribute {
        CryptoAttribute {
            tag,
            suite: self.suite.crypto_suite(),
            keys: vec![KeyParams {
                key_salt: self.key_salt.clone(),
                lifetime: None,
                mki: None,
            }],
            session_params: Vec::new(),
        }
    }

    /// The suite.
    pub fn suite(&self) -> SrtpSuite {
        self.suite
    }

    /// The master key.
    pub fn master_key(&self) -> &[u8] {
        &self.key_salt[..self.suite.key_len()]
    }

    /// The master salt.
    pub fn master_salt(&self) -> &[u8] {
        &self.key_salt[self.suite.key_len()..]
    }
}

/// The SRTP state of one call: outbound packets are protected with the
/// local key, inbound packets unprotected with the remote key.
pub struct SrtpContext {
    suite: SrtpSuite,
    outbound: Context,
    inbound: Context,
    /// Sources whose packets authenticated, RTP and RTCP: only theirs go
    /// to `inbound`.
    known_rtp: Vec<u32>,
    known_rtcp: Vec<u32>,
    /// Checks packets of other sources first. webrtc-srtp keeps state for
    /// a packet's SSRC before it checks the tag, so forged packets with
    /// ever new SSRCs would otherwise grow `inbound` for the whole call;
    /// this context is made afresh after [`PROBE_FAILURES`] refusals.
    probe: Context,
    probe_failures: usize,
    local: SrtpKeyMaterial,
    remote: SrtpKeyMaterial,
    window: usize,
}

/// Refusals after which the context that checks unknown sources is made
/// afresh (each may have left state for one SSRC behind).
const PROBE_FAILURES: usize = 256;

/// Sources remembered as authenticated; a peer changes SSRC rarely.
const KNOWN_SOURCES: usize = 16;

impl fmt::Debug for SrtpContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SrtpContext")
            .field("suite", &self.suite)
            .finish_non_exhaustive()
    }
}

impl SrtpContext {
    /// A context that sends with `local` and receives with `remote`; both
    /// must be for the same suite.
    pub fn new(
        local: &SrtpKeyMaterial,
        remote: &SrtpKeyMaterial,
        config: SrtpConfig,
    ) -> Result<Self, SrtpError> {
        if local.suite != remote.suite {
            return Err(SrtpError::SuiteMismatch {
                local: local.suite,
                remote: remote.suite,
            });
        }
        let suite = local.suite;
        let window = config.replay_window.max(64);
        let outbound = Context::new(
            local.master_key(),
            local.master_salt(),
            suite.profile(),
            None,
            None,
        )
        .map_err(map_error)?;
        let inbound = inbound_context(remote, window)?;
        let probe = inbound_context(remote, window)?;
        Ok(SrtpContext {
            suite,
            outbound,
            inbound,
            known_rtp: Vec::new(),
            known_rtcp: Vec::new(),
            probe,
            probe_failures: 0,
            local: local.clone(),
            remote: remote.clone(),
            window,
        })
    }

    /// Takes new keys after a re-offer, changing only the direction whose
    /// key changed: a crypto context lives as long as its key (RFC 3711
    /// §3.2.1), so a peer that re-keys its side leaves our sending roll-over
    /// counter and SRTCP index where they are. Starting them again under
    /// an unchanged key would reuse keystream (§9.1) after a wrap and make
    /// the peer refuse our packets. On error nothing changed.
    pub fn rekey(
        &mut self,
        local: &SrtpKeyMaterial,
        remote: &SrtpKeyMaterial,
    ) -> Result<(), SrtpError> {
        if local.suite != remote.suite {
            return Err(SrtpError::SuiteMismatch {
                local: local.suite,
                remote: remote.suite,
            });
        }
        let outbound = if *local == self.local {
            None
        } else {
            Some(
                Context::new(
                    local.master_key(),
                    local.master_salt(),
                    local.suite.profile(),
                    None,
                    None,
                )
                .map_err(map_error)?,
            )
        };
        let inbound = if *remote == self.remote {
            None
        } else {
            Some((
                inbound_context(remote, self.window)?,
                inbound_context(remote, self.window)?,
            ))
        };
        if let Some(outbound) = outbound {
            self.outbound = outbound;
            self.local = local.clone();
        }
        if let Some((inbound, probe)) = inbound {
            self.inbound = inbound;
            self.probe = probe;
            self.probe_failures = 0;
            self.known_rtp.clear();
            self.known_rtcp.clear();
            self.remote = remote.clone();
        }
        self.suite = local.suite;
        Ok(())
    }

    /// Unprotects a packet of source `ssrc` with `decrypt`: through the
    /// probe first when the source has not authenticated yet.
    fn unprotect<B>(
        &mut self,
        packet: &[u8],
        ssrc: u32,
        rtcp: bool,
        decrypt: fn(&mut Context, &[u8]) -> Result<B, webrtc_srtp::Error>,
    ) -> Result<Vec<u8>, SrtpError>
    where
        Vec<u8>: From<B>,
    {
        let known = if rtcp {
            &mut self.known_rtcp
        } else {
            &mut self.known_rtp
        };
        if !known.contains(&ssrc) {
            if let Err(e) = decrypt(&mut self.probe, packet) {
                self.probe_failures += 1;
                if self.probe_failures >= PROBE_FAILURES {
                    self.probe_failures = 0;
                    if let Ok(fresh) = inbound_context(&self.remote, self.window) {
                        self.probe = fresh;
                    }
                }
                return Err(map_error(e));
            }
            if known.len() >= KNOWN_SOURCES {
                known.remove(0);
            }
            known.push(ssrc);
        }
        // For a new source this also starts its replay window and
        // roll-over counter in the context that keeps them.
        decrypt(&mut self.inbound, packet)
            .map(Vec::from)
            .map_err(map_error)
    }

    /// The suite in use.
    pub fn suite(&self) -> SrtpSuite {
        self.suite
    }

    /// Protects an RTP packet: encrypts its payload and appends the tag.
    pub fn protect_rtp(&mut self, rtp: &[u8]) -> Result<Vec<u8>, SrtpError> {
        if rtp.len() < RTP_FIXED_HEADER_LEN {
            return Err(SrtpError::Malformed { len: rtp.len() });
        }
        self.outbound
            .encrypt_rtp(rtp)
            .map(Vec::from)
            .map_err(map_error)
    }

    /// Unprotects an SRTP packet: checks the tag and the replay window and
    /// decrypts the payload.
    pub fn unprotect_rtp(&mut self, srtp: &[u8]) -> Result<Vec<u8>, SrtpError> {
        if srtp.len() < RTP_FIXED_HEADER_LEN + self.suite.rtp_overhead() || srtp[0] >> 6 != 2 {
            return Err(SrtpError::Malformed { len: srtp.len() });
        }
        let ssrc = u32::from_be_bytes([srtp[8], srtp[9], srtp[10], srtp[11]]);
        let result = self.unprotect(srtp, ssrc, false, Context::decrypt_rtp);
        if let Err(e) = &result {
            trace!(error = %e, len = srtp.len(), "srtp packet refused");
        }
        result
    }

    /// Protects a compound RTCP packet (RFC 3711 §3.4): encrypts all but
    /// the first header and appends the SRTCP index and tag.
    pub fn protect_rtcp(&mut self, rtcp: &[u8]) -> Result<Vec<u8>, SrtpError> {
        if rtcp.len() < 8 {
            return Err(SrtpError::Malformed { len: rtcp.len() });
        }
        self.outbound
            .encrypt_rtcp(rtcp)
            .map(Vec::from)
            .map_err(map_error)
    }

    /// Unprotects an SRTCP packet.
    pub fn unprotect_rtcp(&mut self, srtcp: &[u8]) -> Result<Vec<u8>, SrtpError> {
        if srtcp.len() < 8 + self.suite.rtcp_overhead() || srtcp[0] >> 6 != 2 {
            return Err(SrtpError::Malformed { len: srtcp.len() });
        }
        let ssrc = u32::from_be_bytes([srtcp[4], srtcp[5], srtcp[6], srtcp[7]]);
        let result = self.unprotect(srtcp, ssrc, true, Context::decrypt_rtcp);
        if let Err(e) = &result {
            trace!(error = %e, len = srtcp.len(), "srtcp packet refused");
        }
        result
    }
}

/// A receiving context for `remote`'s key, with replay protection.
fn inbound_context(remote: &SrtpKeyMaterial, window: usize) -> Result<Context, SrtpError> {
    Context::new(
        remote.master_key(),
        remote.master_salt(),
        remote.suite.profile(),
        Some(srtp_replay_protection(window)),
        Some(srtcp_replay_protection(window)),
    )
    .map_err(map_error)
}

fn map_error(error: webrtc_srtp::Error) -> SrtpError {
    use webrtc_srtp::Error as E;
    match error {
        E::ErrFailedToVerifyAuthTag
        | E::RtpFailedToVerifyAuthTag
        | E::RtcpFailedToVerifyAuthTag
        | E::AesGcm(_) => SrtpError::AuthenticationFailed,
        E::SrtpSsrcDuplicated(..) | E::SrtcpSsrcDuplicated(..) | E::ErrDuplicated => {
            SrtpError::Replayed
        }
        E::ErrTooShortRtp
        | E::ErrTooShortRtcp
        | E::SrtpTooSmall(..)
        | E::SrtcpTooSmall(..)
        | E::RtcpInvalidLengthAuthTag(..)
        | E::Util(_)
        | E::Rtcp(_) => SrtpError::Malformed { len: 0 },
        E::ErrExceededMaxPackets => SrtpError::KeyExhausted,
        other => SrtpError::Library {
            message: other.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use aes::Aes128;
    use aes::cipher::{BlockEncrypt, KeyInit, generic_array::GenericArray};
    use hmac::{Hmac, Mac};
    use proptest::prelude::*;
    use sha1::Sha1;

    use super::*;
    use crate::rtcp::{ReceiverReport, RtcpPacket, write_compound};
    use crate::rtp::{RtpPacket, Ssrc};

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// AES-CM keystream (RFC 3711 §4.1.1): AES of `iv + i` for block i.
    fn keystream(key: &[u8], iv: [u8; 16], len: usize) -> Vec<u8> {
        let cipher = Aes128::new(GenericArray::from_slice(key));
        let base = u128::from_be_bytes(iv);
        let mut out = Vec::with_capacity(len + 16);
        let mut i = 0u128;
        while out.len() < len {
            let mut block = GenericArray::clone_from_slice(&base.wrapping_add(i).to_be_bytes());
            cipher.encrypt_block(&mut block);
            out.extend_from_slice(&block);
            i += 1;
        }
        out.truncate(len);
        out
    }

    /// The key derivation of RFC 3711 §4.3.1 with a key derivation rate of
    /// zero: AES-CM keystream with `x = label << 48 XOR salt` as IV.
    fn derive(master_key: &[u8], master_salt: &[u8], label: u8, len: usize) -> Vec<u8> {
        // A 12-byte (GCM) master salt is padded with zeros (RFC 7714 §11).
        let mut iv = [0u8; 16];
        iv[..master_salt.len()].copy_from_slice(master_salt);
        iv[7] ^= label;
        keystream(master_key, iv, len)
    }

    /// An SRTP packet computed from the RFC's definitions alone.
    fn reference_srtp(master_key: &[u8], master_salt: &[u8], rtp: &[u8], roc: u32) -> Vec<u8> {
        let session_key = derive(master_key, master_salt, 0, 16);
        let auth_key = derive(master_key, master_salt, 1, 20);
        let session_salt = derive(master_key, master_salt, 2, 14);
        let packet = RtpPacket::parse(rtp).unwrap();
        let header_len = rtp.len() - packet.payload.len() - usize::from(packet.padding);
        let index = (u64::from(roc) << 16) | u64::from(packet.sequence_number);
        // IV = (salt << 16) XOR (SSRC << 64) XOR (index << 16)
        let mut iv = [0u8; 16];
        iv[..14].copy_from_slice(&session_salt);
        let iv =
            u128::from_be_bytes(iv) ^ (u128::from(packet.ssrc.0) << 64) ^ (u128::from(index) << 16);
        let stream = keystream(&session_key, iv.to_be_bytes(), rtp.len() - header_len);
        let mut out = rtp[..header_len].to_vec();
        out.extend(rtp[header_len..].iter().zip(&stream).map(|(p, k)| p ^ k));
        let mut mac = <Hmac<Sha1> as Mac>::new_from_slice(&auth_key).unwrap();
        mac.update(&out);
        mac.update(&roc.to_be_bytes());
        out.extend_from_slice(&mac.finalize().into_bytes()[..10]);
        out
    }

    fn rtcp_bytes(ssrc: u32) -> Vec<u8> {
        let rr = RtcpPacket::ReceiverReport(ReceiverReport {
            ssrc: Ssrc(ssrc),
            reports: vec![],
        });
        let mut out = Vec::new();
        write_compound(&[rr], &mut out).unwrap();
        out
    }

    /// An SRTP packet under AEAD_AES_128_GCM computed from RFC 7714 alone:
    /// session keys by the AES-CM PRF (§11), IV = (0^16 || SSRC || ROC ||
    /// SEQ) XOR session salt (§8.1), the header as associated data (§8.2),
    /// a 16-byte tag after the ciphertext.
    fn reference_srtp_gcm(master_key: &[u8], master_salt: &[u8], rtp: &[u8], roc: u32) -> Vec<u8> {
        use aes_gcm::aead::{Aead, Payload};
        use aes_gcm::{Aes128Gcm, KeyInit as _, Nonce};

        let session_key = derive(master_key, master_salt, 0, 16);
        let session_salt = derive(master_key, master_salt, 2, 12);
        let packet = RtpPacket::parse(rtp).unwrap();
        let header_len = rtp.len() - packet.payload.len() - usize::from(packet.padding);
        let mut iv = [0u8; 12];
        iv[2..6].copy_from_slice(&packet.ssrc.0.to_be_bytes());
        iv[6..10].copy_from_slice(&roc.to_be_bytes());
        iv[10..12].copy_from_slice(&packet.sequence_number.to_be_bytes());
        for (v, s) in iv.iter_mut().zip(&session_salt) {
            *v ^= s;
        }
        let cipher = Aes128Gcm::new_from_slice(&session_key).unwrap();
        let sealed = cipher
            .encrypt(
                Nonce::from_slice(&iv),
                Payload {
                    msg: &rtp[header_len..],
                    aad: &rtp[..header_len],
                },
            )
            .unwrap();
        let mut out = rtp[..header_len].to_vec();
        out.extend_from_slice(&sealed);
        out
    }

    const B3_MASTER_KEY: &str = "E1F97A0D3E018BE0D64FA32C06DE4139";
    const B3_MASTER_SALT: &str = "0EC675AD498AFEEBB6960B3AABE6";

    #[test]
    fn rfc3711_b2_aes_cm_keystream() {
        let key = hex("2B7E151628AED2A6ABF7158809CF4F3C");
        let iv: [u8; 16] = hex("F0F1F2F3F4F5F6F7F8F9FAFBFCFD0000").try_into().unwrap();
        let stream = keystream(&key, iv, 48);
        assert_eq!(stream[..16], hex("E03EAD0935C95E80E166B16DD92B4EB4"));
        assert_eq!(stream[16..32], hex("D23513162B02D0F72A43A2FE4A5F97AB"));
        assert_eq!(stream[32..], hex("41E95B3BB0A2E8DD477901E4FCA894C0"));
    }

    #[test]
    fn rfc3711_b3_key_derivation() {
        let (key, salt) = (hex(B3_MASTER_KEY), hex(B3_MASTER_SALT));
        assert_eq!(
            derive(&key, &salt, 0, 16),
            hex("C61E7A93744F39EE10734AFE3FF7A087")
        );
        assert_eq!(
            derive(&key, &salt, 2, 14),
            hex("30CBBC08863D8C85D49DB34A9AE1")
        );
        assert_eq!(
            derive(&key, &salt, 1, 94),
            hex(
                "CEBE321F6FF7716B6FD4AB49AF256A156D38BAA48F0A0ACF3C34E2359E6CDBCE
                 E049646C43D9327AD175578EF72270986371C10C9A369AC2F94A8C5FBCDDDC25
                 6D6E919A48B610EF17C2041E474035766B68642C59BBFC2F34DB60DBDFB2"
            )
        );
    }

    fn b3_context(suite: SrtpSuite) -> (SrtpKeyMaterial, SrtpContext) {
        let key = hex(B3_MASTER_KEY);
        let salt = hex(B3_MASTER_SALT);
        let material = SrtpKeyMaterial::new(suite, &key, &salt[..suite.salt_len()]).unwrap();
        let context = SrtpContext::new(&material, &material, SrtpConfig::default()).unwrap();
        (material, context)
    }

    #[test]
    fn rfc3711_4_protected_packet_matches_the_rfc_definition() {
        let (_, mut ctx) = b3_context(SrtpSuite::AesCm128HmacSha1_80);
        let (key, salt) = (hex(B3_MASTER_KEY), hex(B3_MASTER_SALT));
        for (seq, ssrc, len) in [(0u16, 0u32, 16usize), (1, 0, 160), (2, 0xCAFE_BABE, 37)] {
            let rtp = RtpPacket::new(
                0,
                seq,
                160 * u32::from(seq),
                Ssrc(ssrc),
                (0..len).map(|i| i as u8).collect(),
            )
            .to_bytes()
            .unwrap();
            let protected = ctx.protect_rtp(&rtp).unwrap();
            assert_eq!(protected, reference_srtp(&key, &salt, &rtp, 0), "seq {seq}");
        }
    }

    #[test]
    fn rfc7714_8_gcm_protected_packet_matches_the_rfc_definition() {
        let (_, mut ctx) = b3_context(SrtpSuite::AeadAes128Gcm);
        let key = hex(B3_MASTER_KEY);
        let salt = hex(B3_MASTER_SALT)[..12].to_vec();
        let mut roc = 0;
        for (i, seq) in [1u16, 2, 65535, 0, 1].into_iter().enumerate() {
            if i == 3 {
                roc = 1;
            }
            let rtp = RtpPacket::new(
                111,
                seq,
                960 * i as u32,
                Ssrc(0xDECA_FBAD),
                (0..(20 + i * 30)).map(|b| b as u8).collect(),
            )
            .to_bytes()
            .unwrap();
            let protected = ctx.protect_rtp(&rtp).unwrap();
            assert_eq!(
                protected,
                reference_srtp_gcm(&key, &salt, &rtp, roc),
                "seq {seq}"
            );
        }
    }

    #[test]
    fn rfc3711_3_3_1_sequence_wrap_increments_roc() {
        let (_, mut sender) = b3_context(SrtpSuite::AesCm128HmacSha1_80);
        let (_, mut receiver) = b3_context(SrtpSuite::AesCm128HmacSha1_80);
        let (key, salt) = (hex(B3_MASTER_KEY), hex(B3_MASTER_SALT));
        let mut roc = 0;
        for (i, seq) in [65533u16, 65534, 65535, 0, 1, 2].into_iter().enumerate() {
            if seq == 0 {
                roc = 1;
            }
            let rtp = RtpPacket::new(0, seq, i as u32 * 160, Ssrc(42), vec![i as u8; 160])
                .to_bytes()
                .unwrap();
            let protected = sender.protect_rtp(&rtp).unwrap();
            assert_eq!(
                protected,
                reference_srtp(&key, &salt, &rtp, roc),
                "seq {seq}"
            );
            assert_eq!(
                receiver.unprotect_rtp(&protected).unwrap(),
                rtp,
                "seq {seq}"
            );
        }
    }

    #[test]
    fn rfc3711_3_3_1_receiver_guesses_roc_across_reordered_wrap() {
        let (_, mut sender) = b3_context(SrtpSuite::AesCm128HmacSha1_80);
        let (_, mut receiver) = b3_context(SrtpSuite::AesCm128HmacSha1_80);
        let packets: Vec<Vec<u8>> = [65534u16, 65535, 0, 1]
            .into_iter()
            .map(|seq| {
                let rtp = RtpPacket::new(0, seq, 0, Ssrc(5), vec![seq as u8; 20])
                    .to_bytes()
                    .unwrap();
                sender.protect_rtp(&rtp).unwrap()
            })
            .collect();
        // 65534, then 0 (after the wrap) before 65535, then 1.
        for i in [0, 2, 1, 3] {
            assert!(receiver.unprotect_rtp(&packets[i]).is_ok(), "packet {i}");
        }
    }

    /// RFC 3711 §3.2.1, §9.1: when the peer re-keys its side (a re-INVITE's
    /// new a=crypto), our sending context keeps its roll-over counter: the
    /// peer, still holding our unchanged key, reads our packets after a
    /// wrap, and the keystream is never reused.
    #[test]
    fn rfc3711_3_2_1_a_peer_rekey_keeps_our_roll_over_counter() {
        let suite = SrtpSuite::AesCm128HmacSha1_80;
        let (a, b, b2) = (
            SrtpKeyMaterial::generate(suite).unwrap(),
            SrtpKeyMaterial::generate(suite).unwrap(),
            SrtpKeyMaterial::generate(suite).unwrap(),
        );
        let mut alice = SrtpContext::new(&a, &b, SrtpConfig::default()).unwrap();
        let mut bob = SrtpContext::new(&b, &a, SrtpConfig::default()).unwrap();
        let packet = |seq: u16| {
            RtpPacket::new(0, seq, u32::from(seq) * 160, Ssrc(9), vec![seq as u8; 160])
                .to_bytes()
                .unwrap()
        };
        for seq in [65534u16, 65535, 0, 1] {
            let p = alice.protect_rtp(&packet(seq)).unwrap();
            assert_eq!(bob.unprotect_rtp(&p).unwrap(), packet(seq));
        }
        // Bob re-keys his side; Alice's key for sending stays.
        alice.rekey(&a, &b2).unwrap();
        bob.rekey(&b2, &a).unwrap();
        let p = alice.protect_rtp(&packet(2)).unwrap();
        assert_eq!(bob.unprotect_rtp(&p).unwrap(), packet(2), "ROC 1 kept");
        // Bob's new key works for what he sends.
        let back = bob.protect_rtp(&packet(7)).unwrap();
        assert_eq!(alice.unprotect_rtp(&back).unwrap(), packet(7));
        // Our key changing starts our sending context again, under the new key.
        let a2 = SrtpKeyMaterial::generate(suite).unwrap();
        alice.rekey(&a2, &b2).unwrap();
        bob.rekey(&b2, &a2).unwrap();
        let p = alice.protect_rtp(&packet(3)).unwrap();
        assert_eq!(bob.unprotect_rtp(&p).unwrap(), packet(3));
        assert!(
            alice
                .rekey(
                    &a2,
                    &SrtpKeyMaterial::generate(SrtpSuite::AeadAes128Gcm).unwrap()
                )
                .is_err()
        );
    }

    fn round_trip(suite: SrtpSuite) {
        let a = SrtpKeyMaterial::generate(suite).unwrap();
        let b = SrtpKeyMaterial::generate(suite).unwrap();
        assert_ne!(a, b);
        let mut alice = SrtpContext::new(&a, &b, SrtpConfig::default()).unwrap();
        let mut bob = SrtpContext::new(&b, &a, SrtpConfig::default()).unwrap();
        for seq in 0..50u16 {
            let rtp = RtpPacket::new(111, seq, u32::from(seq) * 960, Ssrc(1), vec![seq as u8; 80])
                .to_bytes()
                .unwrap();
            let srtp = alice.protect_rtp(&rtp).unwrap();
            assert_eq!(srtp.len(), rtp.len() + suite.rtp_overhead());
            assert_ne!(srtp[12..12 + 80], rtp[12..]);
            assert_eq!(bob.unprotect_rtp(&srtp).unwrap(), rtp);
            let back = bob.protect_rtp(&rtp).unwrap();
            assert_eq!(alice.unprotect_rtp(&back).unwrap(), rtp);
        }
        let rtcp = rtcp_bytes(1);
        for _ in 0..3 {
            let srtcp = alice.protect_rtcp(&rtcp).unwrap();
            assert_eq!(srtcp.len(), rtcp.len() + suite.rtcp_overhead());
            assert_eq!(bob.unprotect_rtcp(&srtcp).unwrap(), rtcp);
        }
    }

    #[test]
    fn rfc4568_6_2_1_aes_cm_128_hmac_sha1_80_round_trip() {
        round_trip(SrtpSuite::AesCm128HmacSha1_80);
    }

    #[test]
    fn rfc4568_6_2_2_aes_cm_128_hmac_sha1_32_round_trip() {
        round_trip(SrtpSuite::AesCm128HmacSha1_32);
    }

    #[test]
    fn rfc7714_aead_aes_128_gcm_round_trip() {
        round_trip(SrtpSuite::AeadAes128Gcm);
    }

    #[test]
    fn rfc3711_3_3_tampered_packets_fail_authentication() {
        for suite in SrtpSuite::ALL {
            let (_, mut ctx) = b3_context(suite);
            let rtp = RtpPacket::new(0, 9, 0, Ssrc(3), vec![1; 40])
                .to_bytes()
                .unwrap();
            let srtp = ctx.protect_rtp(&rtp).unwrap();
            for position in [1, 5, 20, srtp.len() - 1] {
                let mut bad = srtp.clone();
                bad[position] ^= 0x01;
                assert_eq!(
                    ctx.unprotect_rtp(&bad),
                    Err(SrtpError::AuthenticationFailed),
                    "{suite:?} byte {position}"
                );
            }
            // The untouched packet still passes: failures did not advance the window.
            assert_eq!(ctx.unprotect_rtp(&srtp).unwrap(), rtp);

            let rtcp = rtcp_bytes(3);
            let mut srtcp = ctx.protect_rtcp(&rtcp).unwrap();
            let last = srtcp.len() - 1;
            srtcp[last] ^= 0x80;
            assert_eq!(
                ctx.unprotect_rtcp(&srtcp),
                Err(SrtpError::AuthenticationFailed),
                "{suite:?}"
            );
        }
    }

    #[test]
    fn rfc3711_3_3_2_replayed_packets_are_rejected() {
        for suite in SrtpSuite::ALL {
            let (_, mut sender) = b3_context(suite);
            let (_, mut receiver) = b3_context(suite);
            let packets: Vec<Vec<u8>> = (0..300u16)
                .map(|seq| {
                    let rtp = RtpPacket::new(0, seq, 0, Ssrc(8), vec![0; 20])
                        .to_bytes()
                        .unwrap();
                    sender.protect_rtp(&rtp).unwrap()
                })
                .collect();
            for p in &packets[..200] {
                receiver.unprotect_rtp(p).unwrap();
            }
            assert_eq!(
                receiver.unprotect_rtp(&packets[199]),
                Err(SrtpError::Replayed),
                "{suite:?}"
            );
            assert_eq!(
                receiver.unprotect_rtp(&packets[150]),
                Err(SrtpError::Replayed),
                "{suite:?}"
            );
            // Older than the 128-packet window.
            assert_eq!(
                receiver.unprotect_rtp(&packets[10]),
                Err(SrtpError::Replayed),
                "{suite:?}"
            );
            // A gap inside the window is fine, once.
            receiver.unprotect_rtp(&packets[250]).unwrap();
            receiver.unprotect_rtp(&packets[230]).unwrap();
            assert_eq!(
                receiver.unprotect_rtp(&packets[230]),
                Err(SrtpError::Replayed)
            );

            let rtcp = rtcp_bytes(8);
            let srtcp = sender.protect_rtcp(&rtcp).unwrap();
            receiver.unprotect_rtcp(&srtcp).unwrap();
            assert_eq!(
                receiver.unprotect_rtcp(&srtcp),
                Err(SrtpError::Replayed),
                "{suite:?}"
            );
        }
    }

    #[test]
    fn rfc4568_6_1_key_material_to_and_from_crypto_attribute() {
        for suite in SrtpSuite::ALL {
            let key = SrtpKeyMaterial::generate(suite).unwrap();
            let attribute = key.to_crypto_attribute(3);
            assert_eq!(attribute.tag, 3);
            assert_eq!(attribute.suite, suite.crypto_suite());
            assert_eq!(
                SrtpKeyMaterial::from_crypto_attribute(&attribute).unwrap(),
                key
            );
            // Through the SDP text and back.
            let line = format!(
                "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio 1 RTP/SAVP 0\r\na=crypto:{attribute}\r\n"
            );
            let sdp = crate::sdp::SessionDescription::parse(&line).unwrap();
            let parsed = sdp.media[0].crypto().next().unwrap();
            assert_eq!(SrtpKeyMaterial::from_crypto_attribute(parsed).unwrap(), key);
        }
    }

    #[test]
    fn rfc4568_6_1_unusable_crypto_attributes_are_refused() {
        let good = SrtpKeyMaterial::generate(SrtpSuite::AesCm128HmacSha1_80)
            .unwrap()
            .to_crypto_attribute(1);
        let mut short = good.clone();
        short.keys[0].key_salt.pop();
        assert!(matches!(
            SrtpKeyMaterial::from_crypto_attribute(&short),
            Err(SrtpError::KeyLength { .. })
        ));
        let mut mki = good.clone();
        mki.keys[0].mki = Some(crate::sdp::Mki {
            value: 1,
            length: 4,
        });
        assert_eq!(
            SrtpKeyMaterial::from_crypto_attribute(&mki),
            Err(SrtpError::UnsupportedKeyParams { reason: "mki" })
        );
        // RFC 4568 §6.3: a session parameter we would not honour makes the
        // line unusable; the replay window size may be ignored.
        for param in [
            "UNENCRYPTED_SRTCP",
            "UNENCRYPTED_SRTP",
            "UNAUTHENTICATED_SRTP",
            "KDR=1",
        ] {
            let mut with = good.clone();
            with.session_params = vec![param.into()];
            assert_eq!(
                SrtpKeyMaterial::from_crypto_attribute(&with),
                Err(SrtpError::UnsupportedKeyParams {
                    reason: "session parameter"
                }),
                "{param}"
            );
        }
        let mut window = good.clone();
        window.session_params = vec!["WSH=128".into()];
        assert!(SrtpKeyMaterial::from_crypto_attribute(&window).is_ok());
        let mut other = good;
        other.suite = CryptoSuite::Other("F8_128_HMAC_SHA1_80".into());
        assert!(matches!(
            SrtpKeyMaterial::from_crypto_attribute(&other),
            Err(SrtpError::UnsupportedSuite { .. })
        ));
    }

    #[test]
    fn key_material_is_not_printed() {
        let key =
            SrtpKeyMaterial::new(SrtpSuite::AesCm128HmacSha1_80, &[0xAB; 16], &[0xCD; 14]).unwrap();
        let text = format!("{key:?}");
        assert!(text.contains("***"));
        assert!(!text.contains("171") && !text.to_lowercase().contains("ab, "));
    }

    #[test]
    fn suites_must_match() {
        let a = SrtpKeyMaterial::generate(SrtpSuite::AesCm128HmacSha1_80).unwrap();
        let b = SrtpKeyMaterial::generate(SrtpSuite::AeadAes128Gcm).unwrap();
        assert!(matches!(
            SrtpContext::new(&a, &b, SrtpConfig::default()),
            Err(SrtpError::SuiteMismatch { .. })
        ));
    }

    proptest! {
        #[test]
        fn unprotect_never_panics_on_random_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..96), suite in 0usize..3) {
            let (_, mut ctx) = b3_context(SrtpSuite::ALL[suite]);
            let _ = ctx.unprotect_rtp(&bytes);
            let _ = ctx.unprotect_rtcp(&bytes);
            let _ = ctx.protect_rtp(&bytes);
            let _ = ctx.protect_rtcp(&bytes);
        }

        #[test]
        fn unprotect_never_panics_on_version_2_headers(mut bytes in proptest::collection::vec(any::<u8>(), 0..96), suite in 0usize..3) {
            if let Some(first) = bytes.first_mut() {
                *first = 0x80 | (*first & 0x3F);
            }
            let (_, mut ctx) = b3_context(SrtpSuite::ALL[suite]);
            let _ = ctx.unprotect_rtp(&bytes);
            let _ = ctx.unprotect_rtcp(&bytes);
            let _ = ctx.protect_rtp(&bytes);
            let _ = ctx.protect_rtcp(&bytes);
        }
    }
}
