//! Forged SRTP and SRTCP with ever new SSRCs, as anyone who can reach the
//! RTP port can send: refused, and the memory they leave behind stays
//! bounded. Measured with a counting allocator, so this file is its own
//! test binary.
#![allow(
    clippy::unwrap_used,
    clippy::print_stdout,
    reason = "tests; the figure is printed"
)]
#![allow(
    unsafe_code,
    reason = "a counting global allocator measures the heap; it forwards every call to System"
)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

use media_engine::srtp::{SrtpConfig, SrtpContext, SrtpError, SrtpKeyMaterial, SrtpSuite};

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every call goes to the system allocator unchanged; only the
// count of live bytes is kept beside it.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: the caller's contract for `alloc` is passed on as is.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: the caller's contract for `dealloc` is passed on as is.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// An RTP packet (12-byte header, 160-byte payload) of `ssrc`.
fn rtp(ssrc: u32, seq: u16) -> Vec<u8> {
    let mut p = vec![0x80, 0, 0, 0, 0, 0, 0, 0];
    p[2..4].copy_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(&[0x55; 160]);
    p
}

#[test]
fn rfc3711_3_3_forged_packets_from_new_sources_leave_bounded_state() {
    let suite = SrtpSuite::AesCm128HmacSha1_80;
    let (a, b) = (
        SrtpKeyMaterial::generate(suite).unwrap(),
        SrtpKeyMaterial::generate(suite).unwrap(),
    );
    let mut alice = SrtpContext::new(&a, &b, SrtpConfig::default()).unwrap();
    let mut bob = SrtpContext::new(&b, &a, SrtpConfig::default()).unwrap();
    // The real stream first, so its source is known.
    for seq in 0..10 {
        let sent = alice.protect_rtp(&rtp(0x1234, seq)).unwrap();
        assert_eq!(bob.unprotect_rtp(&sent).unwrap(), rtp(0x1234, seq));
    }
    let before = LIVE.load(Ordering::Relaxed);
    // 200 000 forged packets, each of a new SSRC, with a made-up tag;
    // every 10th an SRTCP packet of a new sender SSRC.
    for k in 0..200_000u32 {
        let ssrc = 0x1000_0000 + k;
        let mut forged = rtp(ssrc, 7);
        forged.extend_from_slice(&[0xAA; 10]);
        assert!(matches!(
            bob.unprotect_rtp(&forged),
            Err(SrtpError::AuthenticationFailed)
        ));
        if k % 10 == 0 {
            let mut rtcp = vec![0x80, 200, 0, 6];
            rtcp.extend_from_slice(&ssrc.to_be_bytes());
            rtcp.extend_from_slice(&[0; 20]);
            rtcp.extend_from_slice(&[0x80, 0, 0, 1]);
            rtcp.extend_from_slice(&[0xAA; 10]);
            assert!(bob.unprotect_rtcp(&rtcp).is_err());
        }
    }
    let grown = LIVE.load(Ordering::Relaxed) - before;
    println!("live heap grew by {grown} bytes over 220 000 forged packets");
    assert!(grown < 1 << 20, "{grown} bytes kept for forged packets");
    // The real stream still plays.
    for seq in 10..20 {
        let sent = alice.protect_rtp(&rtp(0x1234, seq)).unwrap();
        assert_eq!(bob.unprotect_rtp(&sent).unwrap(), rtp(0x1234, seq));
    }
    // And a new source of the real peer (an SSRC change) is accepted.
    let sent = alice.protect_rtp(&rtp(0x5678, 1000)).unwrap();
    assert_eq!(bob.unprotect_rtp(&sent).unwrap(), rtp(0x5678, 1000));
}
