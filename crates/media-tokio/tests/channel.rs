//! Two audio channels on 127.0.0.1: tones, DTMF and statistics through
//! real sockets, and remote-address latching against strays and a NAT
//! rebinding.
//!
//! The clock is tokio's paused one: it moves only when every task waits,
//! and a datagram on loopback is readable before that, so a second of call
//! runs in a fraction of one and a busy machine cannot stall the media
//! into late packets.

#![allow(clippy::unwrap_used, reason = "test helpers fail loudly")]

use std::f64::consts::PI;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use media_engine::dtmf::Digit;
use media_engine::negotiation::{Codec, MediaNegotiation, MediaSettings, NegotiatedAudio};
use media_engine::rtcp::NtpTimestamp;
use media_engine::rtp::RtpPacket;
use media_engine::srtp::SrtpSuite;
use media_engine::stream::{AudioStream, AudioStreamConfig, AudioStreamEvent};
use media_tokio::{
    AudioChannel, AudioChannelHandle, AudioPort, ChannelConfig, ChannelStatistics, MediaSockets,
    PortRange,
};
use rand::SeedableRng;
use rand::rngs::StdRng;
use tokio::net::UdpSocket;
use tokio::sync::broadcast;
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior, sleep, timeout};

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

fn range() -> PortRange {
    PortRange::new(20000, 29999).unwrap()
}

fn settings(port: u16, codec: Codec, suite: Option<SrtpSuite>) -> MediaSettings {
    let mut settings = MediaSettings::new(LOCALHOST, port).with_codecs([codec]);
    match suite {
        Some(suite) => settings = settings.with_crypto_suites([suite]),
        None => {
            settings.dangerous().disable_srtp();
        }
    }
    settings
}

fn negotiate(
    a: &MediaSockets,
    b: &MediaSockets,
    codec: Codec,
    suite: Option<SrtpSuite>,
) -> (NegotiatedAudio, NegotiatedAudio) {
    let mut rng = StdRng::seed_from_u64(3);
    let mut alice = MediaNegotiation::new(settings(a.rtp_addr().port(), codec, suite), &mut rng);
    let mut bob = MediaNegotiation::new(settings(b.rtp_addr().port(), codec, suite), &mut rng);
    let answer = bob.handle_offer(&alice.create_offer().unwrap()).unwrap();
    let at_alice = alice.handle_answer(&answer.description).unwrap();
    (at_alice, answer.audio.unwrap())
}

/// One side of a call: the channel and a tone generator standing in for
/// the audio device (it writes the capture ring and keeps what the
/// playback ring gets, paced by the clock every 10 ms).
struct Side {
    handle: AudioChannelHandle,
    rate: u32,
    played: Arc<Mutex<Vec<i16>>>,
    running: Arc<AtomicBool>,
    device: JoinHandle<()>,
}

impl Side {
    fn spawn(
        audio: &NegotiatedAudio,
        sockets: MediaSockets,
        rate: u32,
        frequency: f64,
        cname: &str,
    ) -> Side {
        let now = Instant::now().into_std();
        let wall = NtpTimestamp::from_unix(SystemTime::now().duration_since(UNIX_EPOCH).unwrap());
        let mut rng = StdRng::seed_from_u64(u64::from(sockets.rtp_addr().port()));
        let stream =
            AudioStream::new(now, wall, audio, AudioStreamConfig::new(cname), &mut rng).unwrap();
        let capacity = rate as usize; // one second each way
        let (mut mic, capture) = rtrb::RingBuffer::new(capacity);
        let (playback, mut speaker) = rtrb::RingBuffer::new(capacity);
        let port = AudioPort::new(capture, playback, rate);
        let handle = AudioChannel::spawn(stream, sockets, port, ChannelConfig::default()).unwrap();
        let played = Arc::new(Mutex::new(Vec::new()));
        let running = Arc::new(AtomicBool::new(true));
        let device = tokio::spawn({
            let (played, running) = (Arc::clone(&played), Arc::clone(&running));
            async move {
                let chunk = rate as usize / 100;
                let mut clock = tokio::time::interval(Duration::from_millis(10));
                clock.set_missed_tick_behavior(MissedTickBehavior::Burst);
                let mut phase = 0usize;
                // At most 30 s of device time.
                for _ in 0..3000 {
                    clock.tick().await;
                    if !running.load(Ordering::Relaxed) {
                        break;
                    }
                    let samples: Vec<i16> = (phase..phase + chunk)
                        .map(|i| {
                            let t = i as f64 / f64::from(rate);
                            (8000.0 * (2.0 * PI * frequency * t).sin()) as i16
                        })
                        .collect();
                    phase += chunk;
                    let _ = mic.push_partial_slice(&samples);
                    let available = speaker.slots();
                    if let Ok(read) = speaker.read_chunk(available) {
                        let (first, second) = read.as_slices();
                        let mut played = played.lock().unwrap();
                        played.extend_from_slice(first);
                        played.extend_from_slice(second);
                        read.commit_all();
                    }
                }
            }
        });
        Side {
            handle,
            rate,
            played,
            running,
            device,
        }
    }

    /// The last `duration` of what the speaker got.
    fn last_played(&self, duration: Duration) -> Vec<i16> {
        let played = self.played.lock().unwrap();
        let n = (f64::from(self.rate) * duration.as_secs_f64()) as usize;
        played[played.len().saturating_sub(n)..].to_vec()
    }

    async fn stop(self) -> ChannelStatistics {
        let statistics = self.handle.stop().await;
        self.running.store(false, Ordering::Relaxed);
        self.device.await.unwrap();
        statistics
    }
}

/// Frequency from the first and last upward zero crossing, interpolated
/// between samples.
fn frequency(samples: &[i16], rate: u32) -> f64 {
    let mut crossings = samples.windows(2).enumerate().filter_map(|(i, w)| {
        let (x0, x1) = (f64::from(w[0]), f64::from(w[1]));
        (x0 < 0.0 && x1 >= 0.0).then(|| i as f64 + -x0 / (x1 - x0))
    });
    let Some(first) = crossings.next() else {
        return 0.0;
    };
    let (count, last) = crossings.fold((0u32, first), |(n, _), t| (n + 1, t));
    if count == 0 {
        return 0.0;
    }
    f64::from(count) / ((last - first) / f64::from(rate))
}

fn rms(samples: &[i16]) -> f64 {
    let sum: f64 = samples.iter().map(|&s| f64::from(s).powi(2)).sum();
    (sum / samples.len().max(1) as f64).sqrt()
}

fn assert_tone(samples: &[i16], rate: u32, expected: f64, who: &str) {
    let f = frequency(samples, rate);
    assert!(
        (f - expected).abs() <= expected * 0.02,
        "{who} heard {f:.1} Hz, the other side sent {expected} Hz"
    );
    assert!(
        rms(samples) > 2000.0,
        "{who} heard too little: rms {}",
        rms(samples)
    );
}

async fn next_digit(events: &mut broadcast::Receiver<AudioStreamEvent>) -> char {
    timeout(Duration::from_secs(2), async {
        loop {
            match events.recv().await {
                Ok(AudioStreamEvent::DtmfReceived(digit)) => return digit.to_char(),
                Ok(_) => {}
                Err(e) => panic!("events ended: {e}"),
            }
        }
    })
    .await
    .expect("no digit within 2 s")
}

/// Alice's device runs at 48 kHz and sends 1000 Hz; Bob's at 8 kHz and
/// sends 600 Hz; about a second of call.
async fn tones_dtmf_and_quality(codec: Codec, suite: SrtpSuite) {
    let a_sockets = MediaSockets::bind(LOCALHOST, range(), true).await.unwrap();
    let b_sockets = MediaSockets::bind(LOCALHOST, range(), true).await.unwrap();
    let (at_alice, at_bob) = negotiate(&a_sockets, &b_sockets, codec, Some(suite));
    assert_eq!(at_alice.codec, codec);
    let alice = Side::spawn(&at_alice, a_sockets, 48_000, 1000.0, "alice@example.org");
    let bob = Side::spawn(&at_bob, b_sockets, 8_000, 600.0, "bob@example.org");
    let mut bob_events = bob.handle.events();

    sleep(Duration::from_millis(300)).await;
    let (five, hash) = (
        Digit::from_char('5').unwrap(),
        Digit::from_char('#').unwrap(),
    );
    alice
        .handle
        .send_dtmf(five, Duration::from_millis(80))
        .await
        .unwrap();
    alice
        .handle
        .send_dtmf(hash, Duration::from_millis(80))
        .await
        .unwrap();
    assert_eq!(next_digit(&mut bob_events).await, '5');
    assert_eq!(next_digit(&mut bob_events).await, '#');
    sleep(Duration::from_millis(700)).await;

    let window = Duration::from_millis(400);
    assert_tone(&bob.last_played(window), 8_000, 1000.0, "bob");
    assert_tone(&alice.last_played(window), 48_000, 600.0, "alice");

    for (who, side) in [("alice", &alice), ("bob", &bob)] {
        let s = side.handle.statistics();
        eprintln!(
            "{who}: {:?} {:?} sent {} received {} lost {} jitter {:.2} ms jb delay {:?} \
             MOS {:.2} R {:.1} underruns {} overruns {} ticks {}",
            s.stream.codec,
            s.stream.srtp_suite,
            s.stream.packets_sent,
            s.stream.packets_received,
            s.stream.packets_lost,
            s.stream.jitter_ms,
            s.stream.jitter_buffer.current_delay,
            s.stream.quality.mos,
            s.stream.quality.r_factor,
            s.capture_underruns,
            s.playback_overruns,
            s.ticks,
        );
        assert!(s.running);
        assert_eq!(s.stream.srtp_suite, Some(suite));
        assert!(
            s.stream.packets_sent >= 40,
            "{who} sent {}",
            s.stream.packets_sent
        );
        assert!(
            s.stream.packets_received >= 40,
            "{who} received {}",
            s.stream.packets_received
        );
        assert_eq!(s.stream.decrypt_failures, 0);
        assert!(s.stream.quality.mos > 4.0, "{who}: {:?}", s.stream.quality);
        assert_eq!(s.address_switches, 0);
    }
    assert_eq!(bob.handle.statistics().stream.dtmf_received, 2);

    let mut alice_events = alice.handle.events();
    let final_bob = bob.stop().await;
    assert!(!final_bob.running);
    // Bob's BYE reaches Alice.
    let bye = timeout(Duration::from_secs(2), async {
        loop {
            if let Ok(AudioStreamEvent::RemoteBye { .. }) = alice_events.recv().await {
                return;
            }
        }
    })
    .await;
    assert!(bye.is_ok(), "alice saw no BYE");
    let alice_handle = alice.handle.clone();
    let final_alice = alice.stop().await;
    assert!(!final_alice.running);
    assert!(!alice_handle.is_running());
    // Stopping again gives the last figures.
    assert_eq!(
        alice_handle.stop().await.stream.packets_sent,
        final_alice.stream.packets_sent
    );
    assert!(matches!(
        alice_handle.set_muted(true).await,
        Err(media_tokio::ChannelError::Stopped)
    ));
}

#[tokio::test(start_paused = true)]
async fn pcmu_with_aes_cm_128_hmac_sha1_80_carries_tones_and_dtmf() {
    tones_dtmf_and_quality(Codec::Pcmu, SrtpSuite::AesCm128HmacSha1_80).await;
}

#[tokio::test(start_paused = true)]
async fn opus_with_aead_aes_128_gcm_carries_tones_and_dtmf() {
    tones_dtmf_and_quality(Codec::Opus, SrtpSuite::AeadAes128Gcm).await;
}

#[tokio::test(start_paused = true)]
async fn dropping_every_handle_ends_the_task_with_a_bye() {
    let a_sockets = MediaSockets::bind(LOCALHOST, range(), true).await.unwrap();
    let b_sockets = MediaSockets::bind(LOCALHOST, range(), true).await.unwrap();
    let (at_alice, at_bob) = negotiate(&a_sockets, &b_sockets, Codec::Pcmu, None);
    let alice = Side::spawn(&at_alice, a_sockets, 8_000, 1000.0, "alice@example.org");
    let bob = Side::spawn(&at_bob, b_sockets, 8_000, 600.0, "bob@example.org");
    let mut bob_events = bob.handle.events();
    sleep(Duration::from_millis(100)).await;
    let watcher = alice.handle.clone();
    let Side {
        handle,
        running,
        device,
        ..
    } = alice;
    drop(handle);
    sleep(Duration::from_millis(50)).await;
    assert!(watcher.is_running(), "a clone still holds the task");
    drop(watcher);
    running.store(false, Ordering::Relaxed);
    device.await.unwrap();
    let bye = timeout(Duration::from_secs(2), async {
        loop {
            if let Ok(AudioStreamEvent::RemoteBye { .. }) = bob_events.recv().await {
                return;
            }
        }
    })
    .await;
    assert!(bye.is_ok(), "no BYE after the last handle went");
    bob.stop().await;
}

/// A forged RTP packet with `ssrc`: a plausible header and random bytes.
fn forged(ssrc: media_engine::rtp::Ssrc, sequence: u16, len: usize) -> Vec<u8> {
    let payload: Vec<u8> = (0..len)
        .map(|i| (i * 37 + usize::from(sequence)) as u8)
        .collect();
    RtpPacket::new(0, sequence, u32::from(sequence) * 160, ssrc, payload)
        .to_bytes()
        .unwrap()
}

/// Asserts that nothing arrives at `socket` within `wait`.
async fn assert_silent(socket: &UdpSocket, wait: Duration) {
    let mut buffer = [0u8; 2048];
    let got = timeout(wait, socket.recv_from(&mut buffer)).await;
    assert!(got.is_err(), "the stray address received media: {got:?}");
}

/// Two channels' sockets on loopback and a plain PCMU negotiation between
/// them: (Alice's sockets, Bob's, Alice's side, Bob's side).
async fn plain_pcmu_pair() -> (MediaSockets, MediaSockets, NegotiatedAudio, NegotiatedAudio) {
    let a_sockets = MediaSockets::bind(LOCALHOST, range(), true).await.unwrap();
    let b_sockets = MediaSockets::bind(LOCALHOST, range(), true).await.unwrap();
    let (at_alice, at_bob) = negotiate(&a_sockets, &b_sockets, Codec::Pcmu, None);
    (a_sockets, b_sockets, at_alice, at_bob)
}

/// `count` forged packets with `ssrc` from `stray` to `to`, `gap` apart.
async fn stray_burst(stray: &UdpSocket, to: SocketAddr, ssrc: u32, count: u16, gap: Duration) {
    for seq in 0..count {
        stray
            .send_to(&forged(media_engine::rtp::Ssrc(ssrc), seq, 160), to)
            .await
            .unwrap();
        if !gap.is_zero() {
            sleep(gap).await;
        }
    }
}

/// Whatever `stray` got while it held the flow, then nothing more.
async fn assert_stray_gets_no_more(stray: &UdpSocket) {
    let mut buffer = [0u8; 2048];
    while timeout(Duration::from_millis(50), stray.recv_from(&mut buffer))
        .await
        .is_ok()
    {}
    assert_silent(stray, Duration::from_millis(300)).await;
}

#[tokio::test(start_paused = true)]
async fn rfc4961_stray_packets_cannot_hijack_the_flow() {
    for suite in [Some(SrtpSuite::AesCm128HmacSha1_80), None] {
        let a_sockets = MediaSockets::bind(LOCALHOST, range(), true).await.unwrap();
        let b_sockets = MediaSockets::bind(LOCALHOST, range(), true).await.unwrap();
        let (alice_addr, bob_addr) = (a_sockets.rtp_addr(), b_sockets.rtp_addr());
        let (at_alice, at_bob) = negotiate(&a_sockets, &b_sockets, Codec::Pcmu, suite);
        let alice = Side::spawn(&at_alice, a_sockets, 8_000, 1000.0, "alice@example.org");
        let bob = Side::spawn(&at_bob, b_sockets, 8_000, 600.0, "bob@example.org");
        sleep(Duration::from_millis(200)).await;

        let stray = UdpSocket::bind((LOCALHOST, 0)).await.unwrap();
        let alice_ssrc = alice.handle.statistics().stream.local_ssrc;
        let other_ssrc = media_engine::rtp::Ssrc(alice_ssrc.0 ^ 0x5555);
        // A flood: with SRTP, Alice's SSRC but no key; in the clear,
        // another SSRC. Then a burst of RTCP BYEs.
        let ssrc = if suite.is_some() {
            alice_ssrc
        } else {
            other_ssrc
        };
        for seq in 0..50u16 {
            stray
                .send_to(&forged(ssrc, 30_000 + seq, 170), bob_addr)
                .await
                .unwrap();
        }
        let mut bye = vec![0x81, 203, 0, 1];
        bye.extend_from_slice(&alice_ssrc.0.to_be_bytes());
        for _ in 0..10 {
            stray.send_to(&bye, bob_addr).await.unwrap();
        }
        if suite.is_none() {
            // In the clear, one packet with Alice's own SSRC passes the
            // stream's check, but a single one is not enough to move.
            stray
                .send_to(&forged(alice_ssrc, 40_000, 160), bob_addr)
                .await
                .unwrap();
        }
        let received_before = alice.handle.statistics().stream.packets_received;
        assert_silent(&stray, Duration::from_millis(300)).await;

        let s = bob.handle.statistics();
        eprintln!(
            "suite {suite:?}: bob remote {} switches {} decrypt failures {} unknown source {}",
            s.remote_rtp, s.address_switches, s.stream.decrypt_failures, s.stream.unknown_source
        );
        assert_eq!(s.remote_rtp, alice_addr);
        assert_eq!(s.address_switches, 0);
        if suite.is_some() {
            assert!(
                s.stream.decrypt_failures >= 50,
                "{}",
                s.stream.decrypt_failures
            );
            // The BYEs are too short to carry an SRTCP tag.
            assert!(s.stream.malformed >= 10, "{}", s.stream.malformed);
        } else {
            assert!(s.stream.unknown_source >= 50, "{}", s.stream.unknown_source);
        }
        assert_eq!(s.stream.remote_ssrc, Some(alice_ssrc));
        // Bob still talks to Alice.
        let received_after = alice.handle.statistics().stream.packets_received;
        assert!(
            received_after >= received_before + 10,
            "{received_before} -> {received_after}"
        );
        let mut events = bob.handle.events();
        while let Ok(event) = events.try_recv() {
            assert!(
                !matches!(event, AudioStreamEvent::RemoteBye { .. }),
                "a forged BYE got through"
            );
        }
        alice.stop().await;
        bob.stop().await;
    }
}

/// In the clear, a stranger on the path can copy Alice's SSRC: packets
/// from it, however many, do not move the media while Alice's own keep
/// arriving in between (a NAT rebinding sends none from the old address).
#[tokio::test(start_paused = true)]
async fn rfc4961_a_copied_ssrc_cannot_move_the_media_while_the_peer_talks() {
    let a_sockets = MediaSockets::bind(LOCALHOST, range(), true).await.unwrap();
    let b_sockets = MediaSockets::bind(LOCALHOST, range(), true).await.unwrap();
    let (alice_addr, bob_addr) = (a_sockets.rtp_addr(), b_sockets.rtp_addr());
    let (at_alice, at_bob) = negotiate(&a_sockets, &b_sockets, Codec::Pcmu, None);
    let alice = Side::spawn(&at_alice, a_sockets, 8_000, 1000.0, "alice@example.org");
    let bob = Side::spawn(&at_bob, b_sockets, 8_000, 600.0, "bob@example.org");
    sleep(Duration::from_millis(200)).await;

    let stray = UdpSocket::bind((LOCALHOST, 0)).await.unwrap();
    let alice_ssrc = alice.handle.statistics().stream.local_ssrc;
    // One copy every 50 ms: Alice's packets, every 20 ms, come between.
    for seq in 0..12u16 {
        stray
            .send_to(&forged(alice_ssrc, 50_000 + seq, 160), bob_addr)
            .await
            .unwrap();
        sleep(Duration::from_millis(50)).await;
    }
    assert_silent(&stray, Duration::from_millis(300)).await;
    let s = bob.handle.statistics();
    assert_eq!(s.remote_rtp, alice_addr);
    assert_eq!(s.address_switches, 0);
    alice.stop().await;
    bob.stop().await;
}

/// In the clear, a peer whose SDP shows an address it does not send from
/// (behind NAT) is followed even when a stray packet with another SSRC
/// came first: the stray neither fixes the source nor plays.
#[tokio::test(start_paused = true)]
async fn rfc4961_a_stray_packet_first_does_not_lock_out_a_peer_behind_nat() {
    let a_sockets = MediaSockets::bind(LOCALHOST, range(), true).await.unwrap();
    let b_sockets = MediaSockets::bind(LOCALHOST, range(), true).await.unwrap();
    let (alice_addr, bob_addr) = (a_sockets.rtp_addr(), b_sockets.rtp_addr());
    let (at_alice, mut at_bob) = negotiate(&a_sockets, &b_sockets, Codec::Pcmu, None);
    // Alice's SDP names an address nobody sends from.
    let dead = UdpSocket::bind((LOCALHOST, 0)).await.unwrap();
    at_bob.remote_rtp = dead.local_addr().unwrap();
    at_bob.remote_rtcp = dead.local_addr().unwrap();
    let stray = UdpSocket::bind((LOCALHOST, 0)).await.unwrap();
    let bob = Side::spawn(&at_bob, b_sockets, 8_000, 600.0, "bob@example.org");
    stray
        .send_to(&forged(media_engine::rtp::Ssrc(0x1111), 7, 160), bob_addr)
        .await
        .unwrap();
    sleep(Duration::from_millis(20)).await;
    let alice = Side::spawn(&at_alice, a_sockets, 8_000, 1000.0, "alice@example.org");
    sleep(Duration::from_millis(500)).await;
    let s = bob.handle.statistics();
    assert_eq!(s.remote_rtp, alice_addr);
    assert_eq!(s.address_switches, 1);
    assert_eq!(
        s.stream.remote_ssrc,
        Some(alice.handle.statistics().stream.local_ssrc)
    );
    assert_tone(
        &bob.last_played(Duration::from_millis(200)),
        8_000,
        1000.0,
        "bob",
    );
    alice.stop().await;
    bob.stop().await;
}

/// Forwards between Alice and Bob like a NAT in front of Alice: Alice
/// sends to `front`; toward Bob the packets leave from `old` or, once
/// `rebound` is set, from `new`. Whatever Bob sends to either mapping goes
/// back to Alice.
struct Nat {
    front: SocketAddr,
    old: SocketAddr,
    new: SocketAddr,
    rebound: Arc<AtomicBool>,
    from_bob_at_new: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

async fn nat(alice: SocketAddr, bob: SocketAddr) -> Nat {
    let front = UdpSocket::bind((LOCALHOST, 0)).await.unwrap();
    let old = UdpSocket::bind((LOCALHOST, 0)).await.unwrap();
    let new = UdpSocket::bind((LOCALHOST, 0)).await.unwrap();
    let rebound = Arc::new(AtomicBool::new(false));
    let from_bob_at_new = Arc::new(AtomicU64::new(0));
    let addrs = (
        front.local_addr().unwrap(),
        old.local_addr().unwrap(),
        new.local_addr().unwrap(),
    );
    let task = tokio::spawn({
        let (rebound, counter) = (Arc::clone(&rebound), Arc::clone(&from_bob_at_new));
        async move {
            let (mut a, mut b, mut c) = ([0u8; 2048], [0u8; 2048], [0u8; 2048]);
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                tokio::select! {
                    Ok((len, _)) = front.recv_from(&mut a) => {
                        let out = if rebound.load(Ordering::Relaxed) { &new } else { &old };
                        let _ = out.send_to(&a[..len], bob).await;
                    }
                    Ok((len, _)) = old.recv_from(&mut b) => {
                        let _ = front.send_to(&b[..len], alice).await;
                    }
                    Ok((len, _)) = new.recv_from(&mut c) => {
                        counter.fetch_add(1, Ordering::Relaxed);
                        let _ = front.send_to(&c[..len], alice).await;
                    }
                    _ = sleep(Duration::from_millis(100)) => {}
                }
            }
        }
    });
    Nat {
        front: addrs.0,
        old: addrs.1,
        new: addrs.2,
        rebound,
        from_bob_at_new,
        task,
    }
}

#[tokio::test(start_paused = true)]
async fn rfc4961_a_nat_rebinding_is_followed() {
    let a_sockets = MediaSockets::bind(LOCALHOST, range(), true).await.unwrap();
    let b_sockets = MediaSockets::bind(LOCALHOST, range(), true).await.unwrap();
    let nat = nat(a_sockets.rtp_addr(), b_sockets.rtp_addr()).await;
    let (mut at_alice, mut at_bob) = negotiate(
        &a_sockets,
        &b_sockets,
        Codec::Pcmu,
        Some(SrtpSuite::AeadAes128Gcm),
    );
    // Alice's SDP shows the NAT's old mapping; Alice sends through the NAT.
    at_alice.remote_rtp = nat.front;
    at_alice.remote_rtcp = nat.front;
    at_bob.remote_rtp = nat.old;
    at_bob.remote_rtcp = nat.old;
    let alice = Side::spawn(&at_alice, a_sockets, 8_000, 1000.0, "alice@example.org");
    let bob = Side::spawn(&at_bob, b_sockets, 8_000, 600.0, "bob@example.org");

    sleep(Duration::from_millis(300)).await;
    let before = bob.handle.statistics();
    assert_eq!((before.remote_rtp, before.address_switches), (nat.old, 0));
    assert!(before.stream.packets_received >= 10);

    nat.rebound.store(true, Ordering::Relaxed);
    let alice_heard = alice.handle.statistics().stream.packets_received;
    sleep(Duration::from_millis(500)).await;

    let after = bob.handle.statistics();
    let at_new = nat.from_bob_at_new.load(Ordering::Relaxed);
    eprintln!(
        "bob remote {} -> {} switches {}; {} packets from bob at the new mapping; \
         alice received {} -> {}",
        before.remote_rtp,
        after.remote_rtp,
        after.address_switches,
        at_new,
        alice_heard,
        alice.handle.statistics().stream.packets_received,
    );
    assert_eq!(after.remote_rtp, nat.new);
    assert_eq!(after.address_switches, 1);
    assert!(at_new >= 15, "bob sent {at_new} packets to the new mapping");
    assert!(alice.handle.statistics().stream.packets_received >= alice_heard + 15);
    assert_tone(
        &alice.last_played(Duration::from_millis(200)),
        8_000,
        600.0,
        "alice",
    );
    assert_eq!(after.stream.decrypt_failures, 0);
    alice.stop().await;
    bob.stop().await;
    nat.task.abort();
}

#[test]
fn handles_and_statistics_cross_threads() {
    fn send_sync<T: Send + Sync + Clone>() {}
    send_sync::<AudioChannelHandle>();
    send_sync::<ChannelStatistics>();
    send_sync::<MediaSockets>();
}

/// A relay standing in for a TURN allocation: a loopback UDP socket whose
/// address is the "relayed" one; it counts what goes through it and the
/// peers it was asked to permit.
#[derive(Debug)]
struct FakeRelay {
    socket: UdpSocket,
    permitted: Mutex<Vec<SocketAddr>>,
    sent: AtomicU64,
    received: AtomicU64,
}

impl media_tokio::RelaySocket for FakeRelay {
    fn relayed_addr(&self) -> SocketAddr {
        self.socket.local_addr().unwrap()
    }

    fn permit(&self, peer: SocketAddr) -> media_tokio::RelayFuture<'_, std::io::Result<()>> {
        self.permitted.lock().unwrap().push(peer);
        Box::pin(async { Ok(()) })
    }

    fn send_to<'a>(
        &'a self,
        data: &'a [u8],
        peer: SocketAddr,
    ) -> media_tokio::RelayFuture<'a, std::io::Result<usize>> {
        self.sent.fetch_add(1, Ordering::Relaxed);
        Box::pin(self.socket.send_to(data, peer))
    }

    fn recv_from<'a>(
        &'a self,
        buf: &'a mut [u8],
    ) -> media_tokio::RelayFuture<'a, std::io::Result<(usize, SocketAddr)>> {
        Box::pin(async move {
            let received = self.socket.recv_from(buf).await;
            self.received.fetch_add(1, Ordering::Relaxed);
            received
        })
    }
}

#[tokio::test(start_paused = true)]
async fn media_through_a_relay_carries_tones_both_ways() {
    let relay = Arc::new(FakeRelay {
        socket: UdpSocket::bind((LOCALHOST, 0)).await.unwrap(),
        permitted: Mutex::new(Vec::new()),
        sent: AtomicU64::new(0),
        received: AtomicU64::new(0),
    });
    let a_sockets = MediaSockets::relayed(relay.clone());
    assert_eq!(a_sockets.rtp_addr(), relay.socket.local_addr().unwrap());
    assert!(a_sockets.rtp_socket().is_none() && a_sockets.relay().is_some());
    let b_sockets = MediaSockets::bind(LOCALHOST, range(), true).await.unwrap();
    let b_addr = b_sockets.rtp_addr();
    let (at_alice, at_bob) = negotiate(
        &a_sockets,
        &b_sockets,
        Codec::Pcmu,
        Some(SrtpSuite::AesCm128HmacSha1_80),
    );
    let alice = Side::spawn(&at_alice, a_sockets, 8_000, 1000.0, "alice@example.org");
    let bob = Side::spawn(&at_bob, b_sockets, 8_000, 600.0, "bob@example.org");
    sleep(Duration::from_millis(1000)).await;

    let window = Duration::from_millis(400);
    assert_tone(&bob.last_played(window), 8_000, 1000.0, "bob");
    assert_tone(&alice.last_played(window), 8_000, 600.0, "alice");
    let (sent, received) = (
        relay.sent.load(Ordering::Relaxed),
        relay.received.load(Ordering::Relaxed),
    );
    eprintln!("relay: sent {sent} received {received}");
    assert!(
        sent > 40 && received > 40,
        "sent {sent} received {received}"
    );
    assert_eq!(*relay.permitted.lock().unwrap(), [b_addr]);
    assert_eq!(
        bob.handle.statistics().remote_rtp,
        relay.socket.local_addr().unwrap()
    );
    let (a, b) = (alice.stop().await, bob.stop().await);
    assert_eq!(a.send_errors + b.send_errors, 0);
}

/// Bob sends to `addr`, takes `peer`'s SSRC as the remote source, and
/// plays its `hz` tone.
fn assert_follows(bob: &Side, peer: &Side, addr: SocketAddr, hz: f64) {
    let s = bob.handle.statistics();
    assert_eq!(s.remote_rtp, addr);
    assert_eq!(
        s.stream.remote_ssrc,
        Some(peer.handle.statistics().stream.local_ssrc)
    );
    assert_tone(
        &bob.last_played(Duration::from_millis(200)),
        8_000,
        hz,
        "bob",
    );
}

/// RTP bleed: stray plain RTP that reaches Bob before Alice's first packet
/// takes the flow, but Alice's packets from the address her SDP names win
/// it back at once, and the stray address gets no more media.
#[tokio::test(start_paused = true)]
async fn rfc4961_strays_that_came_first_lose_the_flow_to_the_sdp_address() {
    let (a_sockets, b_sockets, at_alice, at_bob) = plain_pcmu_pair().await;
    let (alice_addr, bob_addr) = (a_sockets.rtp_addr(), b_sockets.rtp_addr());
    let stray = UdpSocket::bind((LOCALHOST, 0)).await.unwrap();
    let bob = Side::spawn(&at_bob, b_sockets, 8_000, 600.0, "bob@example.org");
    stray_burst(&stray, bob_addr, 0x1111, 4, Duration::ZERO).await;
    sleep(Duration::from_millis(20)).await;
    let alice = Side::spawn(&at_alice, a_sockets, 8_000, 1000.0, "alice@example.org");
    sleep(Duration::from_millis(500)).await;
    assert_follows(&bob, &alice, alice_addr, 1000.0);
    assert_stray_gets_no_more(&stray).await;
    alice.stop().await;
    bob.stop().await;
}

/// RTP bleed with the peer behind NAT: strays reach Bob before Alice's
/// first packet and take the flow, and Alice's SDP names an address she
/// never sends from. Once the strays have been silent for two seconds,
/// Alice's packets from her public address (another SSRC) take the flow,
/// and Bob plays her; while the stray held it, they could not.
#[tokio::test(start_paused = true)]
async fn rfc4961_strays_that_came_first_lose_the_flow_to_a_peer_behind_nat() {
    let (a_sockets, b_sockets, at_alice, mut at_bob) = plain_pcmu_pair().await;
    let (alice_addr, bob_addr) = (a_sockets.rtp_addr(), b_sockets.rtp_addr());
    let private = UdpSocket::bind((LOCALHOST, 0)).await.unwrap();
    at_bob.remote_rtp = private.local_addr().unwrap();
    at_bob.remote_rtcp = private.local_addr().unwrap();
    let stray = UdpSocket::bind((LOCALHOST, 0)).await.unwrap();
    let stray_addr = stray.local_addr().unwrap();
    let bob = Side::spawn(&at_bob, b_sockets, 8_000, 600.0, "bob@example.org");
    stray_burst(&stray, bob_addr, 0x1111, 4, Duration::from_millis(20)).await;
    let alice = Side::spawn(&at_alice, a_sockets, 8_000, 1000.0, "alice@example.org");
    sleep(Duration::from_millis(1000)).await;
    let held = bob.handle.statistics();
    assert_eq!(held.remote_rtp, stray_addr, "the stray took the flow first");
    assert_eq!(
        held.stream.remote_ssrc,
        Some(media_engine::rtp::Ssrc(0x1111))
    );
    sleep(Duration::from_millis(2000)).await;
    assert_follows(&bob, &alice, alice_addr, 1000.0);
    assert_stray_gets_no_more(&stray).await;
    alice.stop().await;
    bob.stop().await;
}

/// Past the first seconds of the media, a silent peer (on hold, or with
/// silence suppression) keeps its flow: plain RTP from another source and
/// SSRC cannot take it, however long the peer is quiet.
#[tokio::test(start_paused = true)]
async fn rfc4961_a_silent_peer_keeps_its_flow_once_the_call_has_settled() {
    let (a_sockets, b_sockets, at_alice, at_bob) = plain_pcmu_pair().await;
    let (alice_addr, bob_addr) = (a_sockets.rtp_addr(), b_sockets.rtp_addr());
    let alice = Side::spawn(&at_alice, a_sockets, 8_000, 1000.0, "alice@example.org");
    let bob = Side::spawn(&at_bob, b_sockets, 8_000, 600.0, "bob@example.org");
    sleep(Duration::from_secs(12)).await;
    alice.stop().await;
    sleep(Duration::from_secs(3)).await;
    let stray = UdpSocket::bind((LOCALHOST, 0)).await.unwrap();
    stray_burst(&stray, bob_addr, 0x2222, 20, Duration::from_millis(20)).await;
    let s = bob.handle.statistics();
    assert_eq!(s.remote_rtp, alice_addr);
    assert_eq!(s.address_switches, 0);
    assert_silent(&stray, Duration::from_millis(300)).await;
    bob.stop().await;
}

/// A re-offer that moves media to another endpoint behind NAT (a transfer,
/// direct media): its SDP address is private, its SSRC new. Bob forgets
/// the old peer's SSRC, follows the new endpoint's packets to its public
/// address, and plays it.
#[tokio::test(start_paused = true)]
async fn rfc4961_media_moved_to_a_new_endpoint_behind_nat_is_followed() {
    let a_sockets = MediaSockets::bind(LOCALHOST, range(), true).await.unwrap();
    let b_sockets = MediaSockets::bind(LOCALHOST, range(), true).await.unwrap();
    let c_sockets = MediaSockets::bind(LOCALHOST, range(), true).await.unwrap();
    let carol_addr = c_sockets.rtp_addr();
    let (at_alice, at_bob) = negotiate(&a_sockets, &b_sockets, Codec::Pcmu, None);
    let (at_carol, mut at_bob_to_carol) = negotiate(&c_sockets, &b_sockets, Codec::Pcmu, None);
    let bob = Side::spawn(&at_bob, b_sockets, 8_000, 600.0, "bob@example.org");
    let alice = Side::spawn(&at_alice, a_sockets, 8_000, 1000.0, "alice@example.org");
    sleep(Duration::from_millis(200)).await;
    // Carol's SDP names a private address nobody sends from.
    let private = UdpSocket::bind((LOCALHOST, 0)).await.unwrap();
    at_bob_to_carol.remote_rtp = private.local_addr().unwrap();
    at_bob_to_carol.remote_rtcp = private.local_addr().unwrap();
    bob.handle.update(at_bob_to_carol).await.unwrap();
    alice.stop().await;
    let carol = Side::spawn(&at_carol, c_sockets, 8_000, 1500.0, "carol@example.org");
    sleep(Duration::from_millis(500)).await;
    assert_follows(&bob, &carol, carol_addr, 1500.0);
    carol.stop().await;
    bob.stop().await;
}

/// Bob's channel (PCMU, 8 kHz) on a device whose rings the test drives:
/// what it captures goes into the first ring returned, what it plays comes
/// out of the second; rings of 200 ms (`capacity` samples), as
/// media-audio's devices have.
async fn device_channel(
    seed: u64,
) -> (
    AudioChannelHandle,
    rtrb::Producer<i16>,
    rtrb::Consumer<i16>,
    usize,
) {
    let a_sockets = MediaSockets::bind(LOCALHOST, range(), true).await.unwrap();
    let b_sockets = MediaSockets::bind(LOCALHOST, range(), true).await.unwrap();
    let (_, at_bob) = negotiate(&a_sockets, &b_sockets, Codec::Pcmu, None);
    drop(a_sockets);
    let rate = 8_000u32;
    let now = Instant::now().into_std();
    let wall = NtpTimestamp::from_unix(SystemTime::now().duration_since(UNIX_EPOCH).unwrap());
    let stream = AudioStream::new(
        now,
        wall,
        &at_bob,
        AudioStreamConfig::new("bob@example.org"),
        &mut StdRng::seed_from_u64(seed),
    )
    .unwrap();
    let capacity = rate as usize / 5;
    let (mic, capture) = rtrb::RingBuffer::new(capacity);
    let (playback, speaker) = rtrb::RingBuffer::new(capacity);
    let handle = AudioChannel::spawn(
        stream,
        b_sockets,
        AudioPort::new(capture, playback, rate),
        ChannelConfig::default(),
    )
    .unwrap();
    (handle, mic, speaker, capacity)
}

/// A stall (a device that delivered 60 ms late, all at once) leaves audio
/// waiting in the capture ring beyond the target: it is cut within about
/// a second, not worn down a millisecond a second, which kept every word
/// 60 ms late for a minute.
#[tokio::test(start_paused = true)]
async fn a_capture_backlog_a_stall_left_is_cut_at_once() {
    let (handle, mut mic, mut speaker, capacity) = device_channel(6).await;
    let mut clock = tokio::time::interval(Duration::from_millis(10));
    clock.set_missed_tick_behavior(MissedTickBehavior::Burst);
    let (mut before, mut after) = (0, 0);
    for tick in 1..=500u32 {
        clock.tick().await;
        let _ = mic.push_partial_slice(&[1000i16; 80]);
        if tick == 200 {
            let _ = mic.push_partial_slice(&[1000i16; 480]);
        }
        if let Ok(read) = speaker.read_chunk(80.min(speaker.slots())) {
            read.commit_all();
        }
        let waiting = capacity - mic.slots();
        if (100..200).contains(&tick) {
            before = before.max(waiting);
        }
        if tick > 400 {
            after = after.max(waiting);
        }
    }
    handle.stop().await;
    // Cut to the target backlog (20 ms, 160 samples), which the steady
    // level before the stall was below: no more than that above it, where
    // the stall had put 480 samples.
    assert!(
        after <= before + 160,
        "{after} samples waiting 2 s after the stall, {before} before it"
    );
}

/// A sound card whose clock runs 0.05 % off the packet clock (beyond the
/// few hundred ppm cards show), capturing
/// fast and playing slow, over ten minutes: the drift is worn down a
/// millisecond at a time, so neither ring builds delay and no frame is
/// lost (without it the playback ring fills and drops whole frames, and
/// the capture backlog climbs to its 100 ms cap).
#[tokio::test(start_paused = true)]
async fn a_device_clock_that_drifts_builds_no_delay_and_loses_no_frame() {
    let (handle, mut mic, mut speaker, capacity) = device_channel(5).await;
    // Every 10 ms: 80.04 samples captured, 79.96 played.
    let mut clock = tokio::time::interval(Duration::from_millis(10));
    clock.set_missed_tick_behavior(MissedTickBehavior::Burst);
    let (mut captured, mut played) = (0.0f64, 0.0f64);
    let (mut mic_level, mut speaker_level) = (0, 0);
    for tick in 1..=60_000u32 {
        clock.tick().await;
        let due_in = (f64::from(tick) * 80.04 - captured) as usize;
        captured += due_in as f64;
        let _ = mic.push_partial_slice(&vec![1000i16; due_in]);
        let due_out = (f64::from(tick) * 79.96 - played) as usize;
        played += due_out as f64;
        if let Ok(read) = speaker.read_chunk(due_out.min(speaker.slots())) {
            read.commit_all();
        }
        if tick > 59_000 {
            mic_level = mic_level.max(capacity - mic.slots());
            speaker_level = speaker_level.max(speaker.slots());
        }
    }
    let s = handle.stop().await;
    assert_eq!(s.playback_overruns, 0, "{s:?}");
    // The last 10 s: under 60 ms waiting in either ring.
    assert!(mic_level < 480, "capture ring held {mic_level} samples");
    assert!(
        speaker_level < 480,
        "playback ring held {speaker_level} samples"
    );
    assert!(s.playback_dropped > 0 && s.capture_dropped > 0, "{s:?}");
}
