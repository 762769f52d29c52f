//! `srtp`: protect and unprotect one 20 ms PCMU packet (172 bytes of RTP),
//! through media-engine's `SrtpContext` and through webrtc-srtp's
//! `Context` directly, with the same replay protection, in one group; the
//! ratio is the wrapper's overhead.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use media_engine::rtp::{RtpPacket, Ssrc};
use media_engine::srtp::{SrtpConfig, SrtpContext, SrtpKeyMaterial, SrtpSuite};
use webrtc_srtp::context::Context;
use webrtc_srtp::option::{srtcp_replay_protection, srtp_replay_protection};
use webrtc_srtp::protection_profile::ProtectionProfile;

fn packet() -> Vec<u8> {
    RtpPacket::new(0, 0, 0, Ssrc(0x1234_5678), vec![0xD5; 160])
        .to_bytes()
        .expect("a plain packet writes")
}

/// Moves the packet to the next sequence number, so replay protection
/// lets every iteration through.
fn advance(rtp: &mut [u8], seq: &mut u16) {
    *seq = seq.wrapping_add(1);
    rtp[2..4].copy_from_slice(&seq.to_be_bytes());
}

fn bench(c: &mut Criterion) {
    for (suite, profile, name) in [
        (
            SrtpSuite::AesCm128HmacSha1_80,
            ProtectionProfile::Aes128CmHmacSha1_80,
            "aes_cm_128_hmac_sha1_80",
        ),
        (
            SrtpSuite::AeadAes128Gcm,
            ProtectionProfile::AeadAes128Gcm,
            "aead_aes_128_gcm",
        ),
    ] {
        let mut group = c.benchmark_group(format!("srtp/{name}"));
        group.throughput(Throughput::Elements(1));
        let key = SrtpKeyMaterial::generate(suite).expect("the OS random source works");

        group.bench_function("media-engine", |b| {
            let mut sender =
                SrtpContext::new(&key, &key, SrtpConfig::default()).expect("valid key");
            let mut receiver =
                SrtpContext::new(&key, &key, SrtpConfig::default()).expect("valid key");
            let (mut rtp, mut seq) = (packet(), 0u16);
            b.iter(|| {
                advance(&mut rtp, &mut seq);
                let protected = sender.protect_rtp(black_box(&rtp)).expect("protects");
                receiver
                    .unprotect_rtp(black_box(&protected))
                    .expect("unprotects")
                    .len()
            });
        });

        group.bench_function("webrtc-srtp", |b| {
            let new = |replay: bool| {
                let (srtp, srtcp) = if replay {
                    (
                        Some(srtp_replay_protection(128)),
                        Some(srtcp_replay_protection(128)),
                    )
                } else {
                    (None, None)
                };
                Context::new(key.master_key(), key.master_salt(), profile, srtp, srtcp)
                    .expect("valid key")
            };
            let (mut sender, mut receiver) = (new(false), new(true));
            let (mut rtp, mut seq) = (packet(), 0u16);
            b.iter(|| {
                advance(&mut rtp, &mut seq);
                let protected = sender.encrypt_rtp(black_box(&rtp)).expect("protects");
                receiver
                    .decrypt_rtp(black_box(&protected))
                    .expect("unprotects")
                    .len()
            });
        });
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
