//! Call-quality estimate: a simplified E-model (ITU-T G.107) giving the
//! transmission rating R and the estimated mean opinion score (MOS).
//!
//! The simplification keeps the default values of every parameter except
//! the three a VoIP endpoint can measure:
//!
//! - the basic signal-to-noise term minus simultaneous impairments is the
//!   default `Ro - Is = 93.2`;
//! - the delay impairment `Id` is G.107's `Idd` term for the absolute
//!   one-way delay `Ta` (echo is assumed cancelled, so `Idte` and `Idle`
//!   are taken as zero);
//! - the equipment impairment `Ie-eff` comes from the codec's `Ie` and
//!   packet-loss robustness `Bpl` (ITU-T G.113 Appendix I) and the measured
//!   loss and burstiness;
//! - the advantage factor `A` is 0.
//!
//! ```
//! use std::time::Duration;
//! use media_engine::quality::{CodecImpairment, QualityInput, estimate};
//!
//! let q = estimate(&QualityInput {
//!     one_way_delay: Duration::from_millis(80),
//!     packet_loss_percent: 1.0,
//!     burst_ratio: 1.0,
//!     codec: CodecImpairment::G711_PLC,
//! });
//! assert!(q.mos > 4.2 && q.mos < 4.4);
//! ```

use std::time::Duration;

/// The default `Ro - Is` of G.107 with all other parameters at defaults.
pub const DEFAULT_R: f64 = 93.2;

/// A codec's equipment impairment factors (ITU-T G.113 Appendix I).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CodecImpairment {
    /// `Ie`: impairment without loss.
    pub ie: f64,
    /// `Bpl`: robustness against packet loss.
    pub bpl: f64,
}

impl CodecImpairment {
    /// G.711 with packet-loss concealment: `Ie = 0`, `Bpl = 25.1`.
    pub const G711_PLC: CodecImpairment = CodecImpairment { ie: 0.0, bpl: 25.1 };
    /// G.711 without concealment: `Ie = 0`, `Bpl = 4.3`.
    pub const G711: CodecImpairment = CodecImpairment { ie: 0.0, bpl: 4.3 };
}

/// Measurements the estimate is made from.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct QualityInput {
    /// Absolute one-way mouth-to-ear delay `Ta`: network delay plus jitter
    /// buffer plus codec and device delay.
    pub one_way_delay: Duration,
    /// Packet loss, in percent (0 to 100), after the jitter buffer (late
    /// packets count as lost).
    pub packet_loss_percent: f64,
    /// `BurstR`: 1 for random loss, above 1 for bursty loss.
    pub burst_ratio: f64,
    /// The codec in use.
    pub codec: CodecImpairment,
}

/// The result of [`estimate`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct QualityEstimate {
    /// The transmission rating factor R (0 to 100).
    pub r_factor: f64,
    /// The estimated mean opinion score, conversational quality (1 to 4.5).
    pub mos: f64,
    /// The delay impairment `Id` used.
    pub delay_impairment: f64,
    /// The effective equipment impairment `Ie-eff` used.
    pub equipment_impairment: f64,
}

/// Estimates R and MOS from the measurements.
pub fn estimate(input: &QualityInput) -> QualityEstimate {
    let id = delay_impairment(input.one_way_delay);
    let ie_eff =
        effective_equipment_impairment(input.codec, input.packet_loss_percent, input.burst_ratio);
    let r = (DEFAULT_R - id - ie_eff).clamp(0.0, 100.0);
    QualityEstimate {
        r_factor: r,
        mos: mos_from_r(r),
        delay_impairment: id,
        equipment_impairment: ie_eff,
    }
}

/// G.107's `Idd`: zero up to 100 ms, then
/// `25 * ((1 + X^6)^(1/6) - 3 * (1 + (X/3)^6)^(1/6) + 2)` with
/// `X = log2(Ta / 100 ms)`.
pub fn delay_impairment(one_way_delay: Duration) -> f64 {
    let ta = one_way_delay.as_secs_f64() * 1000.0;
    if ta <= 100.0 {
        return 0.0;
    }
    let x = (ta / 100.0).log2();
    25.0 * ((1.0 + x.powi(6)).powf(1.0 / 6.0) - 3.0 * (1.0 + (x / 3.0).powi(6)).powf(1.0 / 6.0)
        + 2.0)
}

/// G.107's `Ie-eff = Ie + (95 - Ie) * Ppl / (Ppl / BurstR + Bpl)`.
pub fn effective_equipment_impairment(
    codec: CodecImpairment,
    packet_loss_percent: f64,
    burst_ratio: f64,
) -> f64 {
    let ppl = if packet_loss_percent.is_finite() {
        packet_loss_percent.clamp(0.0, 100.0)
    } else {
        0.0
    };
    let burst = if burst_ratio.is_finite() {
        burst_ratio.max(1.0)
    } else {
        1.0
    };
    let denominator = ppl / burst + codec.bpl;
    if denominator <= 0.0 {
        return codec.ie;
    }
    codec.ie + (95.0 - codec.ie) * ppl / denominator
}

/// G.107 Annex B: MOS from R. 1 below R = 0, 4.5 above R = 100, otherwise
/// `1 + 0.035 R + R (R - 60) (100 - R) 7e-6`, held at 1 or more: the
/// polynomial dips to about 0.99 for R under 6.5, below the scale.
pub fn mos_from_r(r: f64) -> f64 {
    if r.is_nan() || r <= 0.0 {
        1.0
    } else if r >= 100.0 {
        4.5
    } else {
        (1.0 + 0.035 * r + r * (r - 60.0) * (100.0 - r) * 7.0e-6).max(1.0)
    }
}

/// The burst ratio `BurstR` of a two-state (Gilbert) loss model with
/// `p` the probability of going from "received" to "lost" and `q` from
/// "lost" back to "received": `BurstR = 1 / (p + q)` (G.107 §3.7).
pub fn burst_ratio(p: f64, q: f64) -> f64 {
    if p + q <= 0.0 { 1.0 } else { 1.0 / (p + q) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, eps: f64) -> bool {
        (a - b).abs() < eps
    }

    #[test]
    fn g107_b_mos_of_default_r_is_4_41() {
        assert!(close(mos_from_r(DEFAULT_R), 4.409, 0.001));
        assert!(close(mos_from_r(50.0), 2.575, 0.001));
        assert_eq!(mos_from_r(-3.0), 1.0);
        assert_eq!(mos_from_r(120.0), 4.5);
        assert_eq!(mos_from_r(f64::NAN), 1.0);
        // The polynomial's dip under 1 near R = 3 stays on the scale.
        for tenth in 1..100 {
            let mos = mos_from_r(f64::from(tenth) / 10.0);
            assert!(
                (1.0..1.5).contains(&mos),
                "R {}: {mos}",
                f64::from(tenth) / 10.0
            );
        }
    }

    #[test]
    fn g107_idd_is_zero_below_100_ms_and_known_above() {
        assert_eq!(delay_impairment(Duration::from_millis(100)), 0.0);
        // Ta = 200 ms: X = 1.
        assert!(close(
            delay_impairment(Duration::from_millis(200)),
            3.044,
            0.001
        ));
        // Ta = 400 ms: X = 2.
        let x: f64 = 2.0;
        let want = 25.0
            * ((1.0 + x.powi(6)).powf(1.0 / 6.0) - 3.0 * (1.0 + (x / 3.0).powi(6)).powf(1.0 / 6.0)
                + 2.0);
        assert!(close(
            delay_impairment(Duration::from_millis(400)),
            want,
            1e-9
        ));
        assert!(close(want, 24.07, 0.01));
    }

    #[test]
    fn g107_ie_eff_for_g711_with_plc() {
        let codec = CodecImpairment::G711_PLC;
        assert_eq!(effective_equipment_impairment(codec, 0.0, 1.0), 0.0);
        // 2 % random loss: 95 * 2 / (2 + 25.1) = 7.011.
        assert!(close(
            effective_equipment_impairment(codec, 2.0, 1.0),
            7.011,
            0.001
        ));
        // Bursty loss hurts more.
        assert!(effective_equipment_impairment(codec, 2.0, 2.0) > 7.011);
    }

    #[test]
    fn g107_typical_call_estimates() {
        let q = estimate(&QualityInput {
            one_way_delay: Duration::from_millis(50),
            packet_loss_percent: 0.0,
            burst_ratio: 1.0,
            codec: CodecImpairment::G711_PLC,
        });
        assert!(close(q.r_factor, 93.2, 1e-9));
        assert!(close(q.mos, 4.409, 0.001));
        let q = estimate(&QualityInput {
            one_way_delay: Duration::from_millis(200),
            packet_loss_percent: 2.0,
            burst_ratio: 1.0,
            codec: CodecImpairment::G711_PLC,
        });
        assert!(close(q.r_factor, 93.2 - 3.044 - 7.011, 0.01));
        assert!(close(q.mos, mos_from_r(q.r_factor), 1e-12));
        // Without concealment, 5 % loss is poor.
        let q = estimate(&QualityInput {
            one_way_delay: Duration::from_millis(50),
            packet_loss_percent: 5.0,
            burst_ratio: 1.0,
            codec: CodecImpairment::G711,
        });
        assert!(q.mos < 3.0, "mos {}", q.mos);
    }

    #[test]
    fn gilbert_burst_ratio() {
        assert!(close(burst_ratio(0.01, 0.99), 1.0, 1e-12));
        assert!(close(burst_ratio(0.02, 0.3), 3.125, 1e-12));
        assert_eq!(burst_ratio(0.0, 0.0), 1.0);
    }
}
