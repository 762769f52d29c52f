//! G.711 mu-law (PCMU, payload type 0) and A-law (PCMA, payload type 8)
//! with packet-loss concealment.
//!
//! The codecs map 16-bit linear PCM to 8-bit codes and back, bit-exact with
//! the ITU-T G.711 tables: decoding yields the table's reconstruction value
//! scaled to 16 bits (A-law values are 13-bit values times 8, mu-law values
//! 14-bit values times 4), and encoding picks the code whose decision
//! interval holds the sample.
//!
//! [`Concealer`] hides lost frames in the spirit of G.711 Appendix I: it
//! keeps a short history of decoded speech, estimates the pitch period when
//! a loss begins, replays the last pitch cycles with smooth joins, fades
//! the replay out over the first 60 ms, and cross-fades back into real
//! speech when packets return.
//!
//! ```
//! use media_engine::g711;
//!
//! let pcm = [0i16, 1000, -1000, 32767];
//! let mut coded = [0u8; 4];
//! g711::encode_ulaw(&pcm, &mut coded);
//! let mut back = [0i16; 4];
//! g711::decode_ulaw(&coded, &mut back);
//! assert_eq!(back, [0, 988, -988, 32124]);
//! ```

/// Encodes one sample to mu-law.
pub fn linear_to_ulaw(sample: i16) -> u8 {
    const BIAS: i32 = 0x84 >> 2;
    const CLIP: i32 = 8159;
    // Work on the 14-bit magnitude, as G.711 specifies mu-law.
    let value = i32::from(sample) >> 2;
    let (magnitude, mask) = if value < 0 {
        (-value, 0x7F)
    } else {
        (value, 0xFF)
    };
    let biased = magnitude.min(CLIP) + BIAS;
    // Segment = position of the highest set bit above bit 5.
    if biased > 0x1FFF {
        return (0x7F ^ mask) as u8;
    }
    let segment = segment_of(biased >> 6);
    let mantissa = (biased >> (segment + 1)) & 0x0F;
    // The code fits in 8 bits by construction.
    (((segment << 4) | mantissa) ^ mask) as u8
}

/// Decodes one mu-law code.
pub fn ulaw_to_linear(code: u8) -> i16 {
    let inverted = !code;
    let segment = (inverted & 0x70) >> 4;
    let mantissa = i16::from(inverted & 0x0F);
    let magnitude = (((mantissa << 3) + 0x84) << segment) - 0x84;
    if inverted & 0x80 != 0 {
        -magnitude
    } else {
        magnitude
    }
}

/// Encodes one sample to A-law.
pub fn linear_to_alaw(sample: i16) -> u8 {
    // Work on the 13-bit magnitude, as G.711 specifies A-law; negative
    // values are offset by one so that -1 and 0 share the smallest level.
    let value = i32::from(sample) >> 3;
    let (magnitude, mask) = if value >= 0 {
        (value, 0xD5)
    } else {
        (-value - 1, 0x55)
    };
    if magnitude > 0xFFF {
        return (0x7F ^ mask) as u8;
    }
    let segment = segment_of(magnitude >> 5);
    let mantissa = if segment < 2 {
        (magnitude >> 1) & 0x0F
    } else {
        (magnitude >> segment) & 0x0F
    };
    (((segment << 4) | mantissa) ^ mask) as u8
}

/// Decodes one A-law code.
pub fn alaw_to_linear(code: u8) -> i16 {
    let toggled = code ^ 0x55;
    let segment = (toggled & 0x70) >> 4;
    let mantissa = i16::from(toggled & 0x0F) << 4;
    let magnitude = match segment {
        0 => mantissa + 8,
        1 => mantissa + 0x108,
        _ => (mantissa + 0x108) << (segment - 1),
    };
    if toggled & 0x80 != 0 {
        magnitude
    } else {
        -magnitude
    }
}

/// Encodes PCM to mu-law; encodes `min(pcm.len(), out.len())` samples.
pub fn encode_ulaw(pcm: &[i16], out: &mut [u8]) {
    for (o, &s) in out.iter_mut().zip(pcm) {
        *o = linear_to_ulaw(s);
    }
}

/// Decodes mu-law to PCM; decodes `min(codes.len(), out.len())` samples.
pub fn decode_ulaw(codes: &[u8], out: &mut [i16]) {
    for (o, &c) in out.iter_mut().zip(codes) {
        *o = ulaw_to_linear(c);
    }
}

/// Encodes PCM to A-law; encodes `min(pcm.len(), out.len())` samples.
pub fn encode_alaw(pcm: &[i16], out: &mut [u8]) {
    for (o, &s) in out.iter_mut().zip(pcm) {
        *o = linear_to_alaw(s);
    }
}

/// Decodes A-law to PCM; decodes `min(codes.len(), out.len())` samples.
pub fn decode_alaw(codes: &[u8], out: &mut [i16]) {
    for (o, &c) in out.iter_mut().zip(codes) {
        *o = alaw_to_linear(c);
    }
}

/// Number of the segment for a value already shifted so that segment 0
/// means 0 and each further segment doubles: 0 for 0, else bit length,
/// capped at 7.
fn segment_of(shifted: i32) -> i32 {
    let bits = 32 - shifted.max(0).leading_zeros();
    // At most 32; the cap keeps the result within 0..=7.
    (bits as i32).min(7)
}

/// Shortest pitch period searched, in samples at 8 kHz (200 Hz).
const MIN_PITCH: usize = 40;
/// Longest pitch period searched, in samples at 8 kHz (about 66 Hz).
const MAX_PITCH: usize = 120;
/// Window over which candidate periods are compared.
const CORRELATION_WINDOW: usize = 160;
/// History kept: three longest periods plus a quarter period for the join.
const HISTORY: usize = 3 * MAX_PITCH + MAX_PITCH / 4;
/// Samples per 10 ms at 8 kHz.
const TEN_MS: usize = 80;
/// Concealment fades to silence over this many samples (60 ms).
const FADE_OUT: usize = 6 * TEN_MS;

/// Packet-loss concealment for 8 kHz narrowband speech.
///
/// Feed every decoded frame through [`good_frame`](Self::good_frame) and
/// ask for [`conceal`](Self::conceal) when a frame is missing. Frames may be
/// any length; the jitter buffer's 20 ms (160 samples) is typical.
///
/// How it works:
///
/// 1. History: the last 48.75 ms (390 samples) of output are kept, and each
///    good frame is held back by a quarter of the longest pitch period, so
///    the start of a loss can be smoothed into what was already played.
/// 2. Loss starts: the pitch period is estimated by normalized
///    cross-correlation of the newest 20 ms with earlier stretches between
///    5 and 15 ms back. The replay buffer starts as the last single period.
/// 3. Replay: the buffer is played cyclically; a quarter-period overlap-add
///    joins the replay to the real signal. After 10 ms the buffer widens to
///    two periods, after 20 ms to three, which sounds less buzzy.
/// 4. Fade: after the first 10 ms the amplitude drops linearly to reach
///    silence at 60 ms; longer losses are silent.
/// 5. Recovery: the first good frame after a loss is cross-faded with the
///    continuing replay over a quarter period plus 4 ms per 10 ms lost.
#[derive(Clone, Debug)]
pub struct Concealer {
    history: Vec<i16>,
    /// Held-back samples from the last good frame (a quarter pitch at most).
    pending: Vec<i16>,
    state: Option<LossState>,
}

#[derive(Clone, Debug)]
struct LossState {
    period: usize,
    /// Number of periods in the replay buffer (1 to 3).
    periods_used: usize,
    /// Position within the replay buffer.
    position: usize,
    /// Samples concealed so far in this loss.
    concealed: usize,
}

impl Default for Concealer {
    fn default() -> Self {
        Self::new()
    }
}

impl Concealer {
    /// A concealer with silent history.
    pub fn new() -> Self {
        Concealer {
            history: vec![0; HISTORY],
            pending: Vec::new(),
            state: None,
        }
    }

    /// Delay this concealer adds to good frames, in samples: a quarter of
    /// the longest pitch period is held back so a loss can blend into it.
    pub const fn delay_samples() -> usize {
        MAX_PITCH / 4
    }

    /// Whether the last call concealed.
    pub fn is_concealing(&self) -> bool {
        self.state.is_some()
    }

    /// Passes a decoded frame through, in place. The output is delayed by
    /// [`delay_samples`](Self::delay_samples); after a loss it is
    /// cross-faded with the continuing replay.
    pub fn good_frame(&mut self, frame: &mut [i16]) {
        let hold = Self::delay_samples();
        let mut joined = std::mem::take(&mut self.pending);
        if let Some(mut state) = self.state.take() {
            // The output runs `hold` samples behind the input, so the tail of
            // the last lost frame is still owed: keep replaying for that long,
            // then cross-fade from the replay into the new speech.
            joined = vec![0; hold];
            self.synthesize(&mut state, &mut joined);
            let len = (state.period / 4 + (state.concealed / TEN_MS) * 32).min(frame.len());
            let mut replay = vec![0i16; len];
            self.synthesize(&mut state, &mut replay);
            for (i, (out, r)) in frame.iter_mut().zip(&replay).enumerate() {
                let w = (i + 1) as f32 / (len + 1) as f32;
                *out = mix(f32::from(*r) * (1.0 - w) + f32::from(*out) * w);
            }
        }
        joined.extend_from_slice(frame);
        let split = joined.len().saturating_sub(hold);
        self.pending = joined.split_off(split);
        // `joined` now holds what goes out; it is short only while the
        // hold-back fills at the very start, so pad with silence in front.
        let missing = frame.len().saturating_sub(joined.len());
        for (i, out) in frame.iter_mut().enumerate() {
            *out = if i < missing { 0 } else { joined[i - missing] };
        }
        self.remember(frame);
    }

    /// Fills `frame` with concealment for a missing frame.
    pub fn conceal(&mut self, frame: &mut [i16]) {
        let mut state = match self.state.take() {
            Some(s) => s,
            None => self.start_loss(),
        };
        let start_len = frame.len().min(self.pending.len());
        self.synthesize(&mut state, frame);
        if state.concealed == frame.len() && start_len > 0 {
            // Blend the held-back real samples into the start of the replay.
            let pending = std::mem::take(&mut self.pending);
            for (i, out) in frame.iter_mut().take(start_len).enumerate() {
                let w = (i + 1) as f32 / (start_len + 1) as f32;
                *out = mix(f32::from(pending[i]) * (1.0 - w) + f32::from(*out) * w);
            }
        }
        self.pending.clear();
        self.remember(frame);
        self.state = Some(state);
    }

    /// Forgets the history, as after a stream change.
    pub fn reset(&mut self) {
        *self = Self::new();
    }

    fn remember(&mut self, frame: &[i16]) {
        if frame.len() >= HISTORY {
            self.history
                .copy_from_slice(&frame[frame.len() - HISTORY..]);
        } else {
            self.history.drain(..frame.len());
            self.history.extend_from_slice(frame);
        }
    }

    fn start_loss(&mut self) -> LossState {
        // Treat the held-back samples as history too: the replay continues
        // from the newest real sample.
        let mut history = self.history.clone();
        history.extend_from_slice(&self.pending);
        let keep = history.len() - HISTORY;
        history.drain(..keep);
        self.history = history;
        let period = estimate_pitch(&self.history);
        // Output lags the input by the hold-back, so the replay starts that
        // many samples before the end of the last period.
        let hold = Self::delay_samples() % period;
        LossState {
            period,
            periods_used: 1,
            position: (period - hold) % period,
            concealed: 0,
        }
    }

    /// Writes replayed, faded samples into `out` and advances `state`.
    fn synthesize(&self, state: &mut LossState, out: &mut [i16]) {
        for sample in out.iter_mut() {
            // Widen the replay buffer at 10 ms and 20 ms into the loss.
            let wanted = 1 + (state.concealed / TEN_MS).min(2);
            if wanted > state.periods_used {
                state.periods_used = wanted;
            }
            let span = state.period * state.periods_used;
            let base = HISTORY - span;
            let value = f32::from(self.history_at(base + state.position % span));
            let gain = if state.concealed < TEN_MS {
                1.0
            } else if state.concealed >= FADE_OUT {
                0.0
            } else {
                1.0 - (state.concealed - TEN_MS) as f32 / (FADE_OUT - TEN_MS) as f32
            };
            *sample = mix(value * gain);
            state.position = (state.position + 1) % span;
            state.concealed += 1;
        }
    }

    fn history_at(&self, index: usize) -> i16 {
        self.history.get(index).copied().unwrap_or(0)
    }
}

/// Estimates the pitch period of the end of `history` by normalized
/// cross-correlation; falls back to the shortest period on silence.
fn estimate_pitch(history: &[i16]) -> usize {
    let end = history.len();
    let target = &history[end - CORRELATION_WINDOW..];
    let mut best = MIN_PITCH;
    let mut best_score = f64::MIN;
    for lag in MIN_PITCH..=MAX_PITCH {
        let Some(start) = end.checked_sub(CORRELATION_WINDOW + lag) else {
            break;
        };
        let candidate = &history[start..start + CORRELATION_WINDOW];
        let mut cross = 0.0f64;
        let mut energy = 0.0f64;
        for (a, b) in target.iter().zip(candidate) {
            cross += f64::from(*a) * f64::from(*b);
            energy += f64::from(*b) * f64::from(*b);
        }
        if energy <= 0.0 {
            continue;
        }
        let score = cross / energy.sqrt();
        if score > best_score {
            best_score = score;
            best = lag;
        }
    }
    best
}

fn mix(value: f32) -> i16 {
    // Saturating conversion is what `as` does for floats.
    value.round() as i16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn g711_ulaw_every_code_round_trips() {
        for code in 0..=255u8 {
            let linear = ulaw_to_linear(code);
            let back = linear_to_ulaw(linear);
            if code == 0x7F {
                // Negative zero decodes to 0, which encodes as positive zero.
                assert_eq!(back, 0xFF);
            } else {
                assert_eq!(back, code, "code {code:#04x} -> {linear}");
            }
        }
    }

    #[test]
    fn g711_alaw_every_code_round_trips() {
        for code in 0..=255u8 {
            let linear = alaw_to_linear(code);
            assert_eq!(linear_to_alaw(linear), code, "code {code:#04x} -> {linear}");
        }
    }

    #[test]
    fn g711_table_values() {
        // mu-law: 0x00/0x80 are the largest magnitudes (8031 * 4 = 32124),
        // 0xFF/0x7F zero, 0xFE/0x7E the smallest step (2 * 4 = 8).
        assert_eq!(ulaw_to_linear(0x00), -32124);
        assert_eq!(ulaw_to_linear(0x80), 32124);
        assert_eq!(ulaw_to_linear(0xFF), 0);
        assert_eq!(ulaw_to_linear(0x7F), 0);
        assert_eq!(ulaw_to_linear(0xFE), 8);
        assert_eq!(ulaw_to_linear(0x7E), -8);
        // A-law (even bits inverted): 0xD5/0x55 are +-1 * 8 (level 1 of
        // 4096), 0xAA/0x2A +-4032 * 8.
        assert_eq!(alaw_to_linear(0xD5), 8);
        assert_eq!(alaw_to_linear(0x55), -8);
        assert_eq!(alaw_to_linear(0xAA), 32256);
        assert_eq!(alaw_to_linear(0x2A), -32256);
        // Silence encodes to the idle codes.
        assert_eq!(linear_to_ulaw(0), 0xFF);
        assert_eq!(linear_to_alaw(0), 0xD5);
        assert_eq!(linear_to_alaw(-1), 0x55);
    }

    #[test]
    fn g711_encoding_is_monotone_and_picks_the_nearest_level_below_the_bound() {
        // Decoded values never decrease as the input grows, and decoding the
        // code of a sample lands within half a step of its segment.
        let mut previous_u = i16::MIN;
        let mut previous_a = i16::MIN;
        for s in (i16::MIN..=i16::MAX).step_by(7) {
            let u = ulaw_to_linear(linear_to_ulaw(s));
            let a = alaw_to_linear(linear_to_alaw(s));
            assert!(u >= previous_u && a >= previous_a, "at {s}");
            previous_u = u;
            previous_a = a;
            let err_u = (i32::from(u) - i32::from(s)).abs();
            let err_a = (i32::from(a) - i32::from(s)).abs();
            // Largest half-step: mu-law 512 (segment 7, *4 scale = 1024/2),
            // A-law 512 (segment 7, *8 scale = 1024/2); clipping aside.
            if s.unsigned_abs() < 32000 {
                assert!(err_u <= 520 && err_a <= 520, "at {s}: {err_u} {err_a}");
            }
        }
    }

    #[test]
    fn slices_encode_and_decode() {
        let pcm: Vec<i16> = (0..160)
            .map(|i| ((i * 397) % 20000 - 10000) as i16)
            .collect();
        let mut coded = vec![0u8; 160];
        let mut back = vec![0i16; 160];
        encode_alaw(&pcm, &mut coded);
        decode_alaw(&coded, &mut back);
        for (a, b) in pcm.iter().zip(&back) {
            assert!((a - b).abs() <= 520);
        }
        encode_ulaw(&pcm, &mut coded);
        decode_ulaw(&coded, &mut back);
        for (a, b) in pcm.iter().zip(&back) {
            assert!((a - b).abs() <= 520);
        }
    }

    fn tone(period: usize, start: usize, len: usize) -> Vec<i16> {
        (start..start + len)
            .map(|n| {
                let phase = (n % period) as f64 / period as f64;
                (8000.0 * (2.0 * std::f64::consts::PI * phase).sin()) as i16
            })
            .collect()
    }

    #[test]
    fn g711_appendix_i_pitch_estimate_finds_the_period() {
        for period in [45usize, 64, 80, 100, 117] {
            let history = tone(period, 0, HISTORY);
            let found = estimate_pitch(&history);
            // A multiple of the true period is acceptable only when it is
            // the true period itself in the searched range.
            assert_eq!(found % period, 0, "period {period} found {found}");
            assert!(found <= MAX_PITCH);
        }
    }

    #[test]
    fn concealment_continues_a_voiced_signal_then_fades() {
        let period = 80;
        let mut plc = Concealer::new();
        let mut n = 0;
        for _ in 0..5 {
            let mut frame = tone(period, n, 160);
            plc.good_frame(&mut frame);
            n += 160;
        }
        // First lost frame: the replay continues the tone closely.
        let mut lost = vec![0i16; 160];
        plc.conceal(&mut lost);
        assert!(plc.is_concealing());
        let expected = tone(period, n - Concealer::delay_samples(), 160);
        let err: f64 = lost
            .iter()
            .zip(&expected)
            .take(80)
            .map(|(a, b)| (f64::from(*a) - f64::from(*b)).abs())
            .sum::<f64>()
            / 80.0;
        assert!(err < 400.0, "mean error {err}");
        // After 60 ms of loss the output is silent.
        for _ in 0..2 {
            plc.conceal(&mut lost);
        }
        plc.conceal(&mut lost);
        assert!(lost.iter().all(|&s| s == 0), "not silent after 60 ms");
        // Recovery resumes real output.
        let mut frame = tone(period, n, 160);
        plc.good_frame(&mut frame);
        assert!(!plc.is_concealing());
        assert!(frame.iter().any(|&s| s.abs() > 4000));
    }

    #[test]
    fn concealment_energy_decays_over_the_loss() {
        let mut plc = Concealer::new();
        for i in 0..5 {
            let mut frame = tone(57, i * 160, 160);
            plc.good_frame(&mut frame);
        }
        let energies: Vec<f64> = (0..3)
            .map(|_| {
                let mut f = vec![0i16; 160];
                plc.conceal(&mut f);
                f.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>()
            })
            .collect();
        assert!(energies[0] > energies[1] && energies[1] > energies[2]);
    }

    #[test]
    fn good_frames_are_delayed_by_the_hold_back_only() {
        let mut plc = Concealer::new();
        let input: Vec<i16> = (0..480).map(|i| i as i16).collect();
        let mut out = Vec::new();
        for chunk in input.chunks(160) {
            let mut frame = chunk.to_vec();
            plc.good_frame(&mut frame);
            out.extend(frame);
        }
        let d = Concealer::delay_samples();
        assert!(out[..d].iter().all(|&s| s == 0));
        assert_eq!(&out[d..], &input[..480 - d]);
    }
}
