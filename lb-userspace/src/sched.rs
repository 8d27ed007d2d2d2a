//! Round-robin schedules: the sequence of real ids a farm's new flows walk.
//! Built here, copied into the `SCHED` map; the datapath only steps a cursor.
use lb_common::SCHED_SLOTS;

/// Plain round-robin: each member once, in order. Weights are ignored (a
/// weight of 0 is filtered out by the caller), as IPVS `rr` does.
pub fn round_robin(members: &[(u32, u32)]) -> Vec<u32> {
    members
        .iter()
        .map(|&(id, _)| id)
        .take(SCHED_SLOTS as usize)
        .collect()
}

/// Weighted round-robin: `members` are (real id, weight). Weights are reduced
/// by their gcd and, if their sum exceeds `SCHED_SLOTS`, scaled down (keeping
/// every member at least one slot). The sequence is nginx's "smooth" WRR, so
/// a heavy real's turns are spread out instead of bunched together.
pub fn weighted(members: &[(u32, u32)]) -> Vec<u32> {
    let members: Vec<(u32, u64)> = members
        .iter()
        .filter(|&&(_, w)| w > 0)
        .map(|&(id, w)| (id, w as u64))
        .collect();
    if members.is_empty() {
        return Vec::new();
    }
    let g = members.iter().fold(0, |g, &(_, w)| gcd(g, w));
    let mut weights: Vec<u64> = members.iter().map(|&(_, w)| w / g).collect();
    let slots = SCHED_SLOTS as u64;
    let sum: u64 = weights.iter().sum();
    if sum > slots {
        // Scale to fit, at least one slot each; members beyond SCHED_SLOTS
        // cannot all fit and are cut by the take() below.
        weights = weights.iter().map(|&w| (w * slots / sum).max(1)).collect();
        while weights.iter().sum::<u64>() > slots {
            let i = (0..weights.len())
                .max_by_key(|&i| weights[i])
                .expect("non-empty");
            weights[i] -= 1;
        }
    }
    let total: i64 = weights.iter().sum::<u64>() as i64;
    let mut current = vec![0i64; members.len()];
    let mut out = Vec::with_capacity(total as usize);
    for _ in 0..total.min(slots as i64) {
        for (c, &w) in current.iter_mut().zip(&weights) {
            *c += w as i64;
        }
        let best = (0..members.len())
            .max_by_key(|&i| (current[i], std::cmp::Reverse(i)))
            .expect("non-empty");
        current[best] -= total;
        out.push(members[best].0);
    }
    out
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(s: &[u32], id: u32) -> usize {
        s.iter().filter(|&&x| x == id).count()
    }

    #[test]
    fn round_robin_lists_each_member_once() {
        assert_eq!(round_robin(&[(4, 10), (7, 1), (9, 3)]), vec![4, 7, 9]);
    }

    #[test]
    fn weighted_reduces_by_gcd_and_spreads_turns() {
        let s = weighted(&[(1, 10), (2, 20), (3, 30)]);
        assert_eq!(s.len(), 6);
        assert_eq!((count(&s, 1), count(&s, 2), count(&s, 3)), (1, 2, 3));
        // Smooth: the heaviest never takes three turns in a row.
        assert!(!s.windows(3).any(|w| w.iter().all(|&x| x == 3)), "{s:?}");
    }

    #[test]
    fn weighted_skips_zero_weights() {
        let s = weighted(&[(1, 0), (2, 5)]);
        assert_eq!(s, vec![2]);
        assert!(weighted(&[(1, 0)]).is_empty());
    }

    #[test]
    fn weighted_scales_large_weights_into_the_slots() {
        let s = weighted(&[(1, 1000), (2, 3000), (3, 7)]);
        assert!(s.len() <= SCHED_SLOTS as usize);
        let (a, b, c) = (count(&s, 1), count(&s, 2), count(&s, 3));
        assert!(c >= 1, "every member keeps a slot");
        // 1:3 within one slot of rounding.
        assert!((b as i64 - 3 * a as i64).abs() <= 3, "{a} {b}");
    }
}
