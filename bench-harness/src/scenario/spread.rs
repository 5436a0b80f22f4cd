//! A figure over rounds, and comparisons called only outside its spread.
//!
//! One open-loop round on a shared machine can catch a hiccup of the VM or of a neighbour,
//! which moves its p99 by orders of magnitude; a merged histogram, or a single round,
//! reports that hiccup as the server's tail. So a tail is measured in several rounds
//! (interleaved across the servers) and reported as the median round with the lowest and
//! the highest ([`Spread`]), and one server is called lower or higher than another only
//! when every round of the one lies on that side of every round of the other
//! ([`standing`]): with five rounds, a claim no hiccup of a single round can make or undo.
//! With so few rounds the lowest and highest are the spread: an interquartile range needs
//! more of them to mean anything.

use serde::Serialize;

/// One figure over the rounds.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Spread {
    /// The median round (of an even count, the mean of the middle two).
    pub median: f64,
    /// The lowest round.
    pub min: f64,
    /// The highest round.
    pub max: f64,
}

impl Spread {
    /// The spread of `rounds`; `None` when there are none.
    pub fn of(rounds: &[f64]) -> Option<Spread> {
        let mut sorted = rounds.to_vec();
        sorted.sort_by(f64::total_cmp);
        let (&min, &max) = (sorted.first()?, sorted.last()?);
        let mid = sorted.len() / 2;
        let median = match sorted.len() % 2 {
            1 => sorted[mid],
            _ => (sorted[mid - 1] + sorted[mid]) / 2.0,
        };
        Some(Spread { median, min, max })
    }
}

/// The median of `values` (of an even count, the mean of the middle two); `None` when empty.
pub fn median(values: &[f64]) -> Option<f64> {
    Spread::of(values).map(|spread| spread.median)
}

/// Where one figure's rounds stand against another's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Standing {
    /// Every round below every round of the other: the highest under the other's lowest.
    Lower,
    /// Every round above every round of the other: the lowest over the other's highest.
    Higher,
    /// The rounds overlap (or touch): no verdict either way.
    WithinSpread,
}

/// Where `ours` stands against `theirs`. Rounds that touch overlap: a tie is no verdict.
pub fn standing(ours: &Spread, theirs: &Spread) -> Standing {
    if ours.max < theirs.min {
        Standing::Lower
    } else if ours.min > theirs.max {
        Standing::Higher
    } else {
        Standing::WithinSpread
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spread(rounds: &[f64]) -> Spread {
        Spread::of(rounds).expect("some rounds")
    }

    #[test]
    fn median_and_extremes_of_rounds() {
        let odd = spread(&[30.0, 10.0, 500.0, 20.0, 40.0]);
        assert_eq!((odd.median, odd.min, odd.max), (30.0, 10.0, 500.0));
        let even = spread(&[4.0, 1.0, 3.0, 2.0]);
        assert_eq!((even.median, even.min, even.max), (2.5, 1.0, 4.0));
        assert_eq!(Spread::of(&[]), None);
    }

    #[test]
    fn lower_only_when_every_round_is_below() {
        let ours = spread(&[10.0, 12.0, 11.0, 14.0, 13.0]);
        let theirs = spread(&[15.0, 20.0, 18.0, 30.0, 16.0]);
        assert_eq!(standing(&ours, &theirs), Standing::Lower);
        assert_eq!(standing(&theirs, &ours), Standing::Higher);
    }

    #[test]
    fn one_hiccup_makes_no_verdict() {
        // Lower in four rounds of five, and in the median, but one round of ours caught a
        // stall that took it past the other's best round.
        let ours = spread(&[10.0, 11.0, 12.0, 13.0, 9_000.0]);
        let theirs = spread(&[20.0, 22.0, 25.0, 30.0, 40.0]);
        assert!(ours.median < theirs.median);
        assert_eq!(standing(&ours, &theirs), Standing::WithinSpread);
        // Likewise a lucky round of theirs below our worst.
        let ours = spread(&[10.0, 11.0, 12.0, 13.0, 14.0]);
        let theirs = spread(&[5.0, 22.0, 25.0, 30.0, 40.0]);
        assert_eq!(standing(&ours, &theirs), Standing::WithinSpread);
        assert_eq!(standing(&theirs, &ours), Standing::WithinSpread);
    }

    #[test]
    fn touching_rounds_are_within_the_spread() {
        let ours = spread(&[10.0, 20.0]);
        let theirs = spread(&[20.0, 30.0]);
        assert_eq!(standing(&ours, &theirs), Standing::WithinSpread);
        assert_eq!(standing(&theirs, &ours), Standing::WithinSpread);
        assert_eq!(standing(&ours, &ours), Standing::WithinSpread);
    }

    #[test]
    fn single_rounds_compare_plainly() {
        let (low, high) = (spread(&[10.0]), spread(&[11.0]));
        assert_eq!(standing(&low, &high), Standing::Lower);
        assert_eq!(standing(&high, &low), Standing::Higher);
        assert_eq!(standing(&low, &low), Standing::WithinSpread);
    }
}
