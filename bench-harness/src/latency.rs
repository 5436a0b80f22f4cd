//! Latency histograms: how they are made, and what is read out of them.
//!
//! Values are nanoseconds in an HdrHistogram with three significant digits (0.1% error),
//! from 1 ns to a minute, which covers anything a bounded measurement can see.

use hdrhistogram::Histogram;
use serde::Serialize;
use std::time::Duration;

/// Highest value a histogram tracks exactly; larger ones saturate to it.
const HIGHEST_NS: u64 = 60_000_000_000;

/// An empty latency histogram (nanoseconds).
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, HIGHEST_NS, 3).expect("the bounds are valid")
}

/// Records `elapsed`, saturating rather than failing on a value out of range.
pub fn record(histogram: &mut Histogram<u64>, elapsed: Duration) {
    let ns = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
    histogram.saturating_record(ns.max(1));
}

/// The summary figures of a latency distribution, in nanoseconds.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Percentiles {
    /// Values recorded.
    pub count: u64,
    /// Arithmetic mean.
    pub mean: f64,
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p99_9: u64,
    /// 99.99th percentile.
    pub p99_99: u64,
    /// Largest value recorded.
    pub max: u64,
}

impl Percentiles {
    /// Reads the summary out of `histogram`.
    pub fn of(histogram: &Histogram<u64>) -> Percentiles {
        let at = |q| histogram.value_at_quantile(q);
        Percentiles {
            count: histogram.len(),
            mean: histogram.mean(),
            p50: at(0.5),
            p90: at(0.9),
            p99: at(0.99),
            p99_9: at(0.999),
            p99_99: at(0.9999),
            max: histogram.max(),
        }
    }
}

/// One point of a percentile curve.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct CurvePoint {
    /// Percentile, 0 to 100.
    pub percentile: f64,
    /// Latency at that percentile, in nanoseconds.
    pub ns: u64,
}

/// The percentile curve of `histogram`: points evenly spaced in "nines" (20 per decade,
/// from the 0th percentile) up to the last percentile the sample count resolves, then the
/// maximum. This is the usual HdrHistogram plot, where the tail gets as much room as the
/// body.
pub fn curve(histogram: &Histogram<u64>) -> Vec<CurvePoint> {
    const STEPS_PER_NINE: u32 = 20;
    if histogram.is_empty() {
        return Vec::new();
    }
    // With n samples, quantiles past 1 - 1/n all read the maximum.
    let nines = (histogram.len() as f64).log10().floor().max(1.0);
    let steps = (nines * f64::from(STEPS_PER_NINE)) as u32;
    let mut points: Vec<CurvePoint> = (0..=steps)
        .map(|step| {
            let quantile = 1.0 - 10f64.powf(-f64::from(step) / f64::from(STEPS_PER_NINE));
            CurvePoint {
                percentile: quantile * 100.0,
                ns: histogram.value_at_quantile(quantile),
            }
        })
        .collect();
    points.push(CurvePoint {
        percentile: 100.0,
        ns: histogram.max(),
    });
    points
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_a_uniform_distribution() {
        let mut h = histogram();
        for ns in 1..=10_000 {
            record(&mut h, Duration::from_nanos(ns));
        }
        let p = Percentiles::of(&h);
        assert_eq!(p.count, 10_000);
        // Three significant digits: within 0.1%.
        assert!(p.p50.abs_diff(5_000) <= 5, "{p:?}");
        assert!(p.p99.abs_diff(9_900) <= 10, "{p:?}");
        assert!(p.max.abs_diff(10_000) <= 10, "{p:?}");
    }

    #[test]
    fn curve_rises_and_ends_at_the_maximum() {
        let mut h = histogram();
        for ns in 1..=100_000 {
            record(&mut h, Duration::from_nanos(ns));
        }
        let points = curve(&h);
        assert!(points.windows(2).all(|w| w[0].ns <= w[1].ns));
        assert!(points
            .windows(2)
            .all(|w| w[0].percentile <= w[1].percentile));
        assert_eq!(points.last().unwrap().ns, h.max());
        // 100,000 samples resolve five nines.
        assert!(points.iter().any(|p| p.percentile >= 99.999));
        assert!(curve(&histogram()).is_empty());
    }
}
