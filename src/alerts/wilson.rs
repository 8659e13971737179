//! The Wilson score interval: how low a rate could plausibly be, given how few events back it.
//!
//! 2 hard bounces in 40 sends is 5 %, and so is 10 in 200, but only the second is evidence:
//! at 95 % confidence their lower bounds are 1.38 % and 2.74 % (EVENTS.md). Rules compare the
//! lower bound, not the point estimate, with their threshold, so small samples stay quiet.

use crate::windows::Rate;

/// The lower bound of the two-sided Wilson score interval of `rate` at `confidence` (e.g.
/// 0.95); `None` without a denominator.
pub fn lower_bound(rate: Rate, confidence: f64) -> Option<f64> {
    if rate.denominator == 0 {
        return None;
    }
    if rate.numerator == 0 {
        // Exactly 0; the formula would leave a rounding residue.
        return Some(0.0);
    }
    let n = rate.denominator as f64;
    let p = (rate.numerator as f64 / n).min(1.0);
    let z = z_score(confidence);
    let z2 = z * z;
    let center = p + z2 / (2.0 * n);
    let margin = z * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt();
    Some(((center - margin) / (1.0 + z2 / n)).max(0.0))
}

/// The standard normal quantile that leaves `(1 - confidence) / 2` in each tail: 1.96 for
/// 0.95. Acklam's rational approximation of the inverse normal CDF (relative error < 1.2e-9),
/// enough for an alert threshold.
pub fn z_score(confidence: f64) -> f64 {
    let confidence = confidence.clamp(0.5, 0.999_999);
    inverse_normal_cdf(1.0 - (1.0 - confidence) / 2.0)
}

fn inverse_normal_cdf(p: f64) -> f64 {
    const A: [f64; 6] = [
        -3.969_683_028_665_376e1,
        2.209_460_984_245_205e2,
        -2.759_285_104_469_687e2,
        1.383_577_518_672_69e2,
        -3.066_479_806_614_716e1,
        2.506_628_277_459_239,
    ];
    const B: [f64; 5] = [
        -5.447_609_879_822_406e1,
        1.615_858_368_580_409e2,
        -1.556_989_798_598_866e2,
        6.680_131_188_771_972e1,
        -1.328_068_155_288_572e1,
    ];
    const C: [f64; 6] = [
        -7.784_894_002_430_293e-3,
        -3.223_964_580_411_365e-1,
        -2.400_758_277_161_838,
        -2.549_732_539_343_734,
        4.374_664_141_464_968,
        2.938_163_982_698_783,
    ];
    const D: [f64; 4] = [
        7.784_695_709_041_462e-3,
        3.224_671_290_700_398e-1,
        2.445_134_137_142_996,
        3.754_408_661_907_416,
    ];
    const LOW: f64 = 0.024_25;
    let tail = |q: f64| {
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    };
    if p < LOW {
        tail((-2.0 * p.ln()).sqrt())
    } else if p > 1.0 - LOW {
        -tail((-2.0 * (1.0 - p).ln()).sqrt())
    } else {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, eps: f64) -> bool {
        (a - b).abs() < eps
    }

    #[test]
    fn the_examples_in_events_md() {
        let small = lower_bound(Rate::new(2, 40), 0.95).unwrap();
        assert!(close(small, 0.0138, 0.0001), "{small}");
        let large = lower_bound(Rate::new(10, 200), 0.95).unwrap();
        assert!(close(large, 0.0274, 0.0001), "{large}");
    }

    #[test]
    fn z_scores_of_common_levels() {
        assert!(close(z_score(0.95), 1.959_964, 1e-5));
        assert!(close(z_score(0.99), 2.575_829, 1e-5));
        assert!(close(z_score(0.90), 1.644_854, 1e-5));
        assert!(close(z_score(0.999), 3.290_527, 1e-5));
    }

    #[test]
    fn edges() {
        assert_eq!(lower_bound(Rate::new(0, 0), 0.95), None);
        assert_eq!(lower_bound(Rate::new(0, 1000), 0.95), Some(0.0));
        let all = lower_bound(Rate::new(50, 50), 0.95).unwrap();
        assert!((0.92..1.0).contains(&all), "{all}");
        // More confidence asks for more evidence.
        let r = Rate::new(10, 200);
        assert!(lower_bound(r, 0.99).unwrap() < lower_bound(r, 0.90).unwrap());
    }
}
