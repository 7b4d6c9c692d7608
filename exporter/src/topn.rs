//! The top-N cut with hysteresis that bounds the series of every per-group family (CLOSE_WAIT groups, memory
//! groups): the N largest groups are exported, the rest summed into one `(other)` series so totals stay exact.
//!
//! Without hysteresis two groups of similar size at the cut swap places every scrape: both series break, the TSDB
//! churns. So a group exported in the previous scrape competes with 1.25 times its size: a group outside takes its
//! place only with more than that (and an exported group leaves once it is below 80% of a contender). Ties go to
//! the incumbent, then to the smaller key, so the output is deterministic.

use std::collections::HashSet;
use std::hash::Hash;

/// The incumbent's advantage, as a fraction (5/4 = 1.25), in integers so that large sizes compare exactly.
const ADVANTAGE: (u128, u128) = (5, 4);

/// Groups as (key, value) pairs.
pub type Groups<K, V> = Vec<(K, V)>;

/// Splits `groups` into the `n` to export and the rest (`n` 0: every group is exported). `size` is what the cut
/// ranks by; `kept` are the groups exported last time.
pub fn top_n_sticky<K: Ord + Hash, V>(
    mut groups: Vec<(K, V)>,
    n: usize,
    kept: &HashSet<K>,
    size: impl Fn(&V) -> u64,
) -> (Groups<K, V>, Groups<K, V>) {
    let score = |(k, v): &(K, V)| {
        let s = u128::from(size(v));
        if kept.contains(k) { s * ADVANTAGE.0 / ADVANTAGE.1 } else { s }
    };
    groups.sort_by(|a, b| {
        score(b).cmp(&score(a)).then_with(|| kept.contains(&b.0).cmp(&kept.contains(&a.0))).then_with(|| a.0.cmp(&b.0))
    });
    if n == 0 || groups.len() <= n {
        return (groups, Vec::new());
    }
    let rest = groups.split_off(n);
    (groups, rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[(&'static str, u64)]) -> Vec<&'static str> {
        v.iter().map(|g| g.0).collect()
    }

    #[test]
    fn incumbents_near_the_cut_stay() {
        let kept: HashSet<&str> = ["b"].into_iter().collect();
        // "c" has slightly more than the incumbent "b": "b" stays.
        let (top, rest) = top_n_sticky(vec![("a", 50), ("b", 10), ("c", 11)], 2, &kept, |v| *v);
        assert_eq!((names(&top), names(&rest)), (vec!["a", "b"], vec!["c"]));
        // Exactly 1.25 times: still the incumbent (ties go to it).
        let (top, _) = top_n_sticky(vec![("a", 500), ("b", 100), ("c", 125)], 2, &kept, |v| *v);
        assert_eq!(names(&top), ["a", "b"]);
        // More than 1.25 times: the newcomer takes the place.
        let (top, rest) = top_n_sticky(vec![("a", 50), ("b", 10), ("c", 13)], 2, &kept, |v| *v);
        assert_eq!((names(&top), names(&rest)), (vec!["a", "c"], vec!["b"]));
    }

    #[test]
    fn two_groups_oscillating_at_the_cut_do_not_flip() {
        let mut kept = HashSet::new();
        let mut exported = Vec::new();
        for round in 0..10 {
            let (a, b) = if round % 2 == 0 { (100, 105) } else { (105, 100) };
            let (top, _) = top_n_sticky(vec![("big", 1000), ("a", a), ("b", b)], 2, &kept, |v| *v);
            kept = top.iter().map(|g| g.0).collect();
            exported.push(names(&top));
        }
        assert!(exported.windows(2).all(|w| w[0] == w[1]), "{exported:?}");
        // Without the previous scrape's memory, the same inputs do flip.
        let (t1, _) = top_n_sticky(vec![("big", 1000), ("a", 100), ("b", 105)], 2, &HashSet::new(), |v| *v);
        let (t2, _) = top_n_sticky(vec![("big", 1000), ("a", 105), ("b", 100)], 2, &HashSet::new(), |v| *v);
        assert_ne!(names(&t1), names(&t2));
    }

    #[test]
    fn zero_means_every_group_and_ties_break_on_the_key() {
        let (top, rest) = top_n_sticky(vec![("y", 5), ("x", 5), ("z", 1)], 0, &HashSet::new(), |v| *v);
        assert_eq!((names(&top), rest.len()), (vec!["x", "y", "z"], 0));
    }
}
