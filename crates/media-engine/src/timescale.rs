//! Time-scale modification of decoded speech: play a frame a little longer
//! or shorter without changing its pitch, so the jitter buffer can move the
//! playout delay by less than a frame (see
//! [`JitterBuffer::pop_scaled`](crate::jitter::JitterBuffer::pop_scaled)).
//!
//! The method is overlap-add of the frame with a shifted copy of itself
//! (as in WSOLA): to remove `k` samples, a stretch of the frame is
//! cross-faded into the stretch `k` samples later; to add `k` samples, into
//! the stretch `k` samples earlier, so that part is heard twice. The
//! splice point is where the two stretches are most alike, which for
//! voiced speech is a pitch period apart, and the cross-fade keeps the
//! waveform continuous.

/// Shortest cross-fade, in samples.
const MIN_FADE: usize = 16;

/// Appends `input` time-scaled to exactly `out_len` samples to `out`.
///
/// Changes of up to half the input's length splice as described in the
/// module documentation; larger ones (not what the jitter buffer asks for)
/// truncate or repeat the input.
pub fn time_scale(input: &[i16], out_len: usize, out: &mut Vec<i16>) {
    let n = input.len();
    out.reserve(out_len);
    if n == 0 {
        out.resize(out.len() + out_len, 0);
        return;
    }
    if out_len == n {
        out.extend_from_slice(input);
        return;
    }
    let k = n.abs_diff(out_len);
    if 2 * k > n {
        // Outside what a splice can do cleanly: cut or loop the frame.
        out.extend(input.iter().cycle().take(out_len));
        return;
    }
    // A long cross-fade spreads the phase change of a shift that is not a
    // pitch period over many samples: half of what the frame leaves.
    let fade = ((n - k) / 2).max(k).max(MIN_FADE).min(n - k);
    let start = best_splice(input, k, fade);
    let mix = |from: &[i16], to: &[i16], out: &mut Vec<i16>| {
        let len = from.len() as i32 + 1;
        for (i, (&a, &b)) in from.iter().zip(to).enumerate() {
            let w = i as i32 + 1;
            let value = (i32::from(a) * (len - w) + i32::from(b) * w) / len;
            out.push(value as i16);
        }
    };
    if out_len < n {
        // [0, s) | fade(s -> s+k) | [s+k+fade, n)
        out.extend_from_slice(&input[..start]);
        mix(
            &input[start..start + fade],
            &input[start + k..start + k + fade],
            out,
        );
        out.extend_from_slice(&input[start + k + fade..]);
    } else {
        // [0, s+k) | fade(s+k -> s) | [s+fade, n): [s, s+k) is heard twice.
        out.extend_from_slice(&input[..start + k]);
        mix(
            &input[start + k..start + k + fade],
            &input[start..start + fade],
            out,
        );
        out.extend_from_slice(&input[start + fade..]);
    }
}

/// The start `s` in `0..=n-k-fade` where `input[s..s+fade]` and
/// `input[s+k..s+k+fade]` correlate best (normalised), so the cross-fade
/// joins like with like; silence joins anywhere.
fn best_splice(input: &[i16], k: usize, fade: usize) -> usize {
    // Up to n-k-fade, less one so a compressed frame ends on its own
    // last sample.
    let last = (input.len() - k - fade).saturating_sub(1);
    let mut best = (f64::NEG_INFINITY, last / 2);
    for s in (0..=last).step_by(2) {
        let (mut xy, mut xx, mut yy) = (0i64, 0i64, 0i64);
        for i in 0..fade {
            let x = i64::from(input[s + i]);
            let y = i64::from(input[s + k + i]);
            xy += x * y;
            xx += x * x;
            yy += y * y;
        }
        let energy = (xx as f64 * yy as f64).sqrt();
        // Quiet stretches are as good as alike ones: the fade is inaudible.
        let score = if energy < 1.0 {
            1.0
        } else {
            xy as f64 / energy
        };
        if score > best.0 {
            best = (score, s);
        }
    }
    best.1
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 200 Hz tone (period 40 samples at 8 kHz) with a slow envelope.
    fn tone(n: usize) -> Vec<i16> {
        (0..n)
            .map(|i| {
                let t = i as f64 / 8000.0;
                (8000.0 * (2.0 * std::f64::consts::PI * 200.0 * t).sin()) as i16
            })
            .collect()
    }

    fn max_step(samples: &[i16]) -> i32 {
        samples
            .windows(2)
            .map(|w| (i32::from(w[1]) - i32::from(w[0])).abs())
            .max()
            .unwrap_or(0)
    }

    #[test]
    fn stretch_and_compress_give_the_asked_length_and_a_continuous_tone() {
        let input = tone(160);
        // The tone's own largest step between samples.
        let natural = max_step(&input);
        for out_len in [120, 130, 150, 159, 161, 170, 190, 200] {
            let mut out = Vec::new();
            time_scale(&input, out_len, &mut out);
            assert_eq!(out.len(), out_len);
            // No click: the splice keeps the waveform smooth.
            let step = max_step(&out);
            assert!(
                step <= natural + natural / 4,
                "{out_len}: step {step} vs {natural}"
            );
            // Still the tone at full level, not silence or a truncation.
            let peak = out.iter().map(|s| i32::from(*s).abs()).max().unwrap_or(0);
            assert!(peak > 7500, "{out_len}: peak {peak}");
            assert_eq!(out[out_len - 1], input[159]);
        }
    }

    #[test]
    fn a_stretched_tone_keeps_its_pitch() {
        // Zero crossings per sample stay those of 200 Hz (one every 20).
        let input = tone(160);
        let mut out = Vec::new();
        time_scale(&input, 200, &mut out);
        let crossings = out.windows(2).filter(|w| (w[0] < 0) != (w[1] < 0)).count();
        assert!(
            (9..=11).contains(&crossings),
            "{crossings} crossings in 200 samples"
        );
        let mut short = Vec::new();
        time_scale(&input, 120, &mut short);
        let crossings = short
            .windows(2)
            .filter(|w| (w[0] < 0) != (w[1] < 0))
            .count();
        assert!(
            (5..=7).contains(&crossings),
            "{crossings} crossings in 120 samples"
        );
    }

    #[test]
    fn edge_cases_keep_the_length() {
        let mut out = Vec::new();
        time_scale(&[], 10, &mut out);
        assert_eq!(out, vec![0; 10]);
        out.clear();
        time_scale(&[1, 2, 3], 3, &mut out);
        assert_eq!(out, [1, 2, 3]);
        out.clear();
        time_scale(&[1, 2, 3], 8, &mut out);
        assert_eq!(out, [1, 2, 3, 1, 2, 3, 1, 2]);
        out.clear();
        time_scale(&[1, 2, 3, 4], 1, &mut out);
        assert_eq!(out, [1]);
    }
}
