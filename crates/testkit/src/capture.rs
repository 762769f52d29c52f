//! Packet capture on loopback with tshark, to check what really went over
//! the wire (for instance that RTP payloads are encrypted).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::process::Command;
use std::time::Duration;

use crate::error::{PeerError, Result};
use crate::net;
use crate::process::{PeerProcess, SpawnSpec, WorkDir, find_binary};

/// A running capture of UDP traffic on `lo`.
#[derive(Debug)]
pub struct Capture {
    process: PeerProcess,
    dir: WorkDir,
}

/// One direction of UDP traffic seen in a capture.
#[derive(Debug, Clone, PartialEq)]
pub struct UdpFlow {
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
    /// Datagrams.
    pub packets: u64,
    /// Datagrams that look like RTP (version 2, not an RTCP packet type).
    pub rtp_packets: u64,
    /// Shannon entropy of the RTP payloads in bits per byte (after the
    /// header, CSRCs and extension): a steady tone in G.711 stays well under
    /// 7, ciphertext is close to 8.
    pub payload_entropy: f64,
    /// Payload bytes that entered the entropy.
    pub payload_bytes: u64,
}

impl UdpFlow {
    /// Whether the flow carried enough RTP to judge and its payloads look
    /// like ciphertext (entropy of at least 7.5 bits per byte).
    #[must_use]
    pub fn looks_encrypted(&self) -> bool {
        self.rtp_packets >= 20 && self.payload_entropy >= 7.5
    }
}

impl Capture {
    /// Starts capturing UDP datagrams on `lo` that match the capture
    /// `filter` (BPF, e.g. `udp portrange 20000-20100`), for at most
    /// `lifetime`.
    ///
    /// # Errors
    ///
    /// [`PeerError::NotInstalled`] without tshark, and the start errors of
    /// [`PeerProcess`]; [`PeerError::NotReady`] when tshark cannot open the
    /// interface (it needs the capture capability or root).
    pub fn start(filter: &str, lifetime: Duration) -> Result<Capture> {
        let program = find_binary("tshark", "tshark")?;
        let dir = WorkDir::new("capture")?;
        let file = dir.path().join("capture.pcapng");
        let args: Vec<OsString> = vec![
            "-i".into(),
            "lo".into(),
            "-f".into(),
            filter.into(),
            "-w".into(),
            file.into(),
        ];
        let mut process = PeerProcess::spawn(SpawnSpec {
            name: "tshark",
            program,
            args,
            work_dir: dir.path(),
            env: Vec::new(),
            lifetime,
        })?;
        net::wait_for_log_line(&mut process, "Capturing on", Duration::from_secs(20))?;
        Ok(Capture { process, dir })
    }

    /// Stops the capture and summarises each UDP flow, in port order.
    ///
    /// # Errors
    ///
    /// [`PeerError::Io`] when tshark cannot read the capture back.
    pub fn stop(mut self) -> Result<Vec<UdpFlow>> {
        // tshark writes its buffered packets on SIGTERM.
        self.process.stop()?;
        let file = self.dir.path().join("capture.pcapng");
        let program = find_binary("tshark", "tshark")?;
        let out = Command::new(program)
            .arg("-r")
            .arg(&file)
            .args(["-T", "fields", "-e", "udp.srcport", "-e", "udp.dstport"])
            .args(["-e", "udp.payload"])
            .output()
            .map_err(|e| PeerError::io("reading the capture with tshark", e))?;
        if !out.status.success() {
            return Err(PeerError::NotReady {
                peer: "tshark".into(),
                what: "a readable capture".into(),
                waited: Duration::ZERO,
                log_tail: String::from_utf8_lossy(&out.stderr).into_owned(),
            });
        }
        Ok(summarise(&String::from_utf8_lossy(&out.stdout)))
    }
}

#[derive(Default)]
struct Acc {
    packets: u64,
    rtp: u64,
    counts: BTreeMap<u8, u64>,
    bytes: u64,
}

fn summarise(fields: &str) -> Vec<UdpFlow> {
    let mut flows: BTreeMap<(u16, u16), Acc> = BTreeMap::new();
    for line in fields.lines() {
        let mut parts = line.split('\t');
        let (Some(sp), Some(dp), Some(hex)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        let (Ok(sp), Ok(dp)) = (sp.parse::<u16>(), dp.parse::<u16>()) else {
            continue;
        };
        let Some(p) = decode_hex(&hex.replace(':', "")) else {
            continue;
        };
        let acc = flows.entry((sp, dp)).or_default();
        acc.packets += 1;
        if let Some(payload) = rtp_payload(&p) {
            acc.rtp += 1;
            for &b in payload {
                *acc.counts.entry(b).or_default() += 1;
            }
            acc.bytes += payload.len() as u64;
        }
    }
    flows
        .into_iter()
        .map(|((src_port, dst_port), a)| {
            let n = a.bytes as f64;
            let entropy = if a.bytes == 0 {
                0.0
            } else {
                -a.counts
                    .values()
                    .map(|&c| {
                        let p = c as f64 / n;
                        p * p.log2()
                    })
                    .sum::<f64>()
            };
            UdpFlow {
                src_port,
                dst_port,
                packets: a.packets,
                rtp_packets: a.rtp,
                payload_entropy: entropy,
                payload_bytes: a.bytes,
            }
        })
        .collect()
}

/// The payload of an RTP packet (not RTCP, not STUN or DTLS).
fn rtp_payload(p: &[u8]) -> Option<&[u8]> {
    if p.len() < 12 || p[0] >> 6 != 2 {
        return None;
    }
    // RTCP packet types 200-204 show as 72-76 in the RTP payload-type field.
    if (72..=76).contains(&(p[1] & 0x7f)) {
        return None;
    }
    let mut header = 12 + 4 * usize::from(p[0] & 0x0f);
    if p[0] & 0x10 != 0 {
        let words = p.get(header + 2..header + 4)?;
        header += 4 + 4 * usize::from(u16::from_be_bytes([words[0], words[1]]));
    }
    let mut end = p.len();
    if p[0] & 0x20 != 0 {
        end = end.checked_sub(usize::from(*p.last()?))?;
    }
    p.get(header..end)
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rtp(payload: &[u8]) -> String {
        let mut p = vec![0x80, 0x00, 0, 1, 0, 0, 0, 160, 1, 2, 3, 4];
        p.extend_from_slice(payload);
        p.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn a_repeating_payload_is_plaintext_and_a_spread_one_is_not() {
        let mut lines = String::new();
        for i in 0..40u32 {
            let plain: Vec<u8> = (0..160).map(|j| (j % 8) as u8 + 0x70).collect();
            lines.push_str(&format!("5000\t6000\t{}\n", rtp(&plain)));
            let spread: Vec<u8> = (0..160u32)
                .map(|j| ((j * 97 + i * 31) % 256) as u8)
                .collect();
            lines.push_str(&format!("6000\t5000\t{}\n", rtp(&spread)));
        }
        lines.push_str("6000\t5000\t81c8000c\n");
        let flows = summarise(&lines);
        assert_eq!(flows.len(), 2);
        assert_eq!(flows[0].src_port, 5000);
        assert!(!flows[0].looks_encrypted(), "{:?}", flows[0]);
        assert!(flows[0].payload_entropy < 3.5);
        assert!(flows[1].looks_encrypted(), "{:?}", flows[1]);
        assert_eq!(flows[1].packets, 41);
        assert_eq!(flows[1].rtp_packets, 40);
    }

    #[test]
    fn odd_input_is_skipped() {
        assert!(summarise("x\ty\tzz\n5000\t6000\t0\n\n").is_empty());
        assert_eq!(rtp_payload(&[0x80]), None);
        assert_eq!(decode_hex("abc"), None);
    }
}
