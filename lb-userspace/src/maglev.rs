//! Weighted Maglev lookup tables (Eisenbud et al., NSDI'16, "Maglev: A Fast
//! and Reliable Software Network Load Balancer", section 3.4).
//!
//! The agent builds one table per farm; the datapath sends a flow to
//! `table[hash % table.len()]`. Maglev is chosen over a plain hash modulo the
//! member count because removing one of N members moves little more than the
//! 1/N of flows that member owned, and because the table is a pure function of
//! the member set: two agents (or an agent before and after a restart) that
//! see the same members build the same table and so send a flow to the same
//! real without sharing any state.
//!
//! That purity is why:
//! - the permutation of a member comes from its `key` (its address), never its
//!   `id`, which each agent allocates locally;
//! - members are sorted by key before the fill, so input order does not matter;
//! - the hash is SipHash-2-4 with two fixed keys, implemented here, not std's
//!   `RandomState`/`DefaultHasher`, whose algorithm and keys are free to change
//!   between processes and Rust versions.
//!
//! Changing [`SIP_KEY_OFFSET`], [`SIP_KEY_SKIP`], the hash or the fill order
//! reshuffles every table, that is, moves most flows of a running cluster;
//! `table_format_is_pinned` below catches such a change.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// The smallest table [`table_size`] returns: 65,537 = 2^16 + 1 is prime and
/// is Katran's default ring. At 4 bytes a slot it costs 256 KiB per farm and
/// keeps up to 655 members at the paper's >= 100 slots per member.
pub const MIN_TABLE_SIZE: u32 = 65_537;

/// Slots per member the table should at least have. The paper (section 5.3)
/// keeps M > 100 * N so that Maglev's per-member imbalance stays around 1%.
pub const SLOTS_PER_MEMBER: u32 = 100;

/// SipHash key for a member's starting offset: the ASCII of `lb/maglev/offset`.
pub const SIP_KEY_OFFSET: [u64; 2] = sip_key(b"lb/maglev/offset");

/// SipHash key for a member's skip: the ASCII of `lb/maglev/skip!!`. A key
/// distinct from [`SIP_KEY_OFFSET`] makes the two hashes independent, as the
/// paper asks.
pub const SIP_KEY_SKIP: [u64; 2] = sip_key(b"lb/maglev/skip!!");

/// A member of a farm as the table sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Member<'a> {
    /// The datapath's real id, the value stored in the table's slots.
    pub id: u32,
    /// A stable identity that picks the permutation, e.g. `203.0.113.11:8080`.
    /// Not the id, so agents with different id allocation build tables that
    /// agree on identities. Keys should be unique within a farm; duplicates
    /// get the same permutation and share its slots.
    pub key: &'a str,
    /// Relative share of the table; 0 leaves the member out.
    pub weight: u32,
}

/// The table size for a farm of `members` members: the smallest prime
/// `>= max(MIN_TABLE_SIZE, SLOTS_PER_MEMBER * members)`.
///
/// Prime, because a skip in `1..M` then steps through every slot (section
/// 3.4). Most farms get the fixed 65,537, so their size does not change as
/// members come and go; a change of size rebuilds every slot, so only farms
/// beyond 655 members grow (4096 members: 409,609 slots).
///
/// # Panics
///
/// If the size does not fit a `u32` (over 42 million members).
pub fn table_size(members: usize) -> u32 {
    let want = u64::try_from(members)
        .unwrap_or(u64::MAX)
        .saturating_mul(u64::from(SLOTS_PER_MEMBER))
        .max(u64::from(MIN_TABLE_SIZE));
    let size = (want..)
        .find(|&n| is_prime(n))
        .expect("primes are unbounded");
    u32::try_from(size)
        .unwrap_or_else(|_| panic!("{members} members need a Maglev table over u32::MAX slots"))
}

/// Builds the lookup table: `size` slots, each holding a member's `id`.
///
/// Returns an empty table when no member has a weight above 0. Every member
/// walks its own permutation of the slots, `offset, offset + skip, ...` modulo
/// `size`, and on its turn takes the first free slot of it. Turns follow
/// Katran's MaglevV2: in each round every member earns its weight in credit and
/// takes a turn per `max weight` of credit, so the heaviest members turn every
/// round. A member's share of slots is then its share of the total weight:
/// lighter members are short by less than one slot, and the heaviest take up
/// the rounding of the last round, at most N slots, which is at most 1% of
/// their share since tables have >= 100 slots per member. With equal weights
/// this is the paper's plain round robin.
/// The turns are drawn from a heap ordered by (round, member), which yields
/// exactly that order but costs O(log N) per slot instead of a pass over all
/// members per round, which would be slow when one weight dwarfs the others.
///
/// # Panics
///
/// If `size` is not prime (see [`table_size`]): a skip sharing a factor with
/// the size would only reach part of the table.
pub fn build(members: &[Member], size: u32) -> Vec<u32> {
    let mut live: Vec<&Member> = members.iter().filter(|m| m.weight > 0).collect();
    if live.is_empty() {
        return Vec::new();
    }
    assert!(
        is_prime(u64::from(size)),
        "Maglev table size {size} is not prime; take it from maglev::table_size"
    );
    // Key order makes the result independent of the input order; id and weight
    // only break ties between duplicate keys.
    live.sort_unstable_by(|a, b| (a.key, a.id, a.weight).cmp(&(b.key, b.id, b.weight)));

    let m = u64::from(size);
    let mut pos: Vec<u64> = Vec::with_capacity(live.len());
    let mut skip: Vec<u64> = Vec::with_capacity(live.len());
    for member in &live {
        pos.push(siphash24(SIP_KEY_OFFSET, member.key.as_bytes()) % m);
        // `% (m - 1) + 1` keeps the skip in 1..m; m = 2 gives skip 1.
        skip.push(siphash24(SIP_KEY_SKIP, member.key.as_bytes()) % (m - 1) + 1);
    }

    let max_weight = live.iter().map(|m| u64::from(m.weight)).max().unwrap_or(1);
    // With credit starting at 0, a member of weight w has taken
    // floor(r * w / max) turns after round r, so its k-th turn (k >= 1) falls
    // in round ceil(k * max / w). k <= size + 1 <= 2^32 and max < 2^32, so
    // the product fits a u64.
    let round_of = |turn: u64, weight: u32| (turn * max_weight).div_ceil(u64::from(weight));
    let mut turns: Vec<u64> = vec![0; live.len()];
    let mut queue: BinaryHeap<Reverse<(u64, usize)>> = live
        .iter()
        .enumerate()
        .map(|(i, member)| Reverse((round_of(1, member.weight), i)))
        .collect();

    // Slots hold member indices until the end; FREE is never one of them.
    const FREE: u32 = u32::MAX;
    assert!(
        live.len() < FREE as usize,
        "too many members for a u32 index"
    );
    let mut owner: Vec<u32> = vec![FREE; size as usize];
    for _ in 0..size {
        let Reverse((_, i)) = queue.pop().expect("every member is always queued");
        // Terminates: the permutation visits every slot once per `size` steps
        // (size prime) and at least one slot is free while we are filling.
        loop {
            let slot = pos[i] as usize;
            pos[i] += skip[i];
            if pos[i] >= m {
                pos[i] -= m;
            }
            if owner[slot] == FREE {
                owner[slot] = i as u32;
                break;
            }
        }
        turns[i] += 1;
        queue.push(Reverse((round_of(turns[i] + 1, live[i].weight), i)));
    }
    owner.into_iter().map(|i| live[i as usize].id).collect()
}

fn is_prime(n: u64) -> bool {
    if n < 4 {
        return n >= 2;
    }
    if n.is_multiple_of(2) {
        return false;
    }
    (3..)
        .step_by(2)
        .take_while(|d| d * d <= n)
        .all(|d| !n.is_multiple_of(d))
}

/// A SipHash key from 16 bytes, little endian as in the reference code.
const fn sip_key(bytes: &[u8; 16]) -> [u64; 2] {
    let mut key = [0u64; 2];
    let mut i = 0;
    while i < 16 {
        key[i / 8] |= (bytes[i] as u64) << (8 * (i % 8));
        i += 1;
    }
    key
}

/// SipHash-2-4 (Aumasson and Bernstein, 2012), the reference algorithm: a
/// well specified keyed hash with published test vectors, so any
/// implementation of this module, in any language, can rebuild the same tables.
fn siphash24(key: [u64; 2], data: &[u8]) -> u64 {
    let mut v = [
        key[0] ^ 0x736f_6d65_7073_6575,
        key[1] ^ 0x646f_7261_6e64_6f6d,
        key[0] ^ 0x6c79_6765_6e65_7261,
        key[1] ^ 0x7465_6462_7974_6573,
    ];
    // Two SipRounds per message word: the "2" of SipHash-2-4.
    let compress = |v: &mut [u64; 4], word: u64| {
        v[3] ^= word;
        sip_round(v);
        sip_round(v);
        v[0] ^= word;
    };
    let mut chunks = data.chunks_exact(8);
    for chunk in &mut chunks {
        let word = u64::from_le_bytes(chunk.try_into().expect("chunks_exact(8)"));
        compress(&mut v, word);
    }
    // The last word holds the remaining bytes and the length's low byte on top.
    let last = chunks
        .remainder()
        .iter()
        .enumerate()
        .fold((data.len() as u64) << 56, |w, (j, &b)| {
            w | u64::from(b) << (8 * j)
        });
    compress(&mut v, last);
    // Four finalisation rounds: the "4".
    v[2] ^= 0xff;
    for _ in 0..4 {
        sip_round(&mut v);
    }
    v[0] ^ v[1] ^ v[2] ^ v[3]
}

fn sip_round(v: &mut [u64; 4]) {
    v[0] = v[0].wrapping_add(v[1]);
    v[1] = v[1].rotate_left(13) ^ v[0];
    v[0] = v[0].rotate_left(32);
    v[2] = v[2].wrapping_add(v[3]);
    v[3] = v[3].rotate_left(16) ^ v[2];
    v[0] = v[0].wrapping_add(v[3]);
    v[3] = v[3].rotate_left(21) ^ v[0];
    v[2] = v[2].wrapping_add(v[1]);
    v[1] = v[1].rotate_left(17) ^ v[2];
    v[2] = v[2].rotate_left(32);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::time::Instant;

    /// Owned keys for `n` members `10.0.x.y:8080`, ids 1..=n.
    fn keys(n: usize) -> Vec<String> {
        (0..n)
            .map(|i| format!("10.0.{}.{}:8080", i / 250, i % 250 + 1))
            .collect()
    }

    fn members(keys: &[String], weight: impl Fn(usize) -> u32) -> Vec<Member<'_>> {
        keys.iter()
            .enumerate()
            .map(|(i, key)| Member {
                id: i as u32 + 1,
                key,
                weight: weight(i),
            })
            .collect()
    }

    fn slots_by_id(table: &[u32]) -> HashMap<u32, usize> {
        let mut count = HashMap::new();
        for &id in table {
            *count.entry(id).or_insert(0) += 1;
        }
        count
    }

    #[test]
    fn siphash_matches_reference_vectors() {
        // Key 00..0f, as in the SipHash paper's appendix and vectors.h.
        let key = sip_key(&std::array::from_fn(|i| i as u8));
        let msg: Vec<u8> = (0..64).collect();
        assert_eq!(siphash24(key, &[]), 0x726f_db47_dd0e_0e31);
        assert_eq!(siphash24(key, &msg[..15]), 0xa129_ca61_49be_45e5);
        // std's (deprecated, but frozen) SipHasher is SipHash-2-4 too: check
        // every tail length against it.
        for len in 0..msg.len() {
            #[expect(deprecated, reason = "an independent SipHash-2-4 to check against")]
            let mut std = std::hash::SipHasher::new_with_keys(key[0], key[1]);
            std::hash::Hasher::write(&mut std, &msg[..len]);
            let want = std::hash::Hasher::finish(&std);
            assert_eq!(siphash24(key, &msg[..len]), want, "length {len}");
        }
    }

    #[test]
    fn table_size_is_a_prime_at_least_the_minimum() {
        for (members, want) in [
            (0, 65_537),
            (1, 65_537),
            (655, 65_537),
            (656, 65_609),
            (1000, 100_003),
            (4096, 409_609),
        ] {
            let size = table_size(members);
            assert_eq!(size, want, "{members} members");
            assert!(is_prime(u64::from(size)));
            let floor = (100 * members as u32).max(MIN_TABLE_SIZE);
            assert!(
                (floor..size).all(|n| !is_prime(u64::from(n))),
                "not the smallest"
            );
        }
        let primes: Vec<u64> = (0..30).filter(|&n| is_prime(n)).collect();
        assert_eq!(primes, [2, 3, 5, 7, 11, 13, 17, 19, 23, 29]);
    }

    #[test]
    #[should_panic(expected = "not prime")]
    fn a_size_that_is_not_prime_is_refused() {
        let k = keys(2);
        build(&members(&k, |_| 1), 65_536);
    }

    #[test]
    fn slots_follow_the_weights_within_one_percent() {
        let cases: [Vec<u32>; 3] = [
            vec![1, 2, 3, 5, 10],
            (0..100).map(|i| i % 7 + 1).collect(),
            (0..10).map(|i| if i == 0 { 1000 } else { 1 }).collect(),
        ];
        for weights in cases {
            let n = weights.len();
            let k = keys(n);
            let ms = members(&k, |i| weights[i]);
            let size = table_size(n);
            let table = build(&ms, size);
            assert_eq!(table.len(), size as usize);
            let total: u32 = ms.iter().map(|m| m.weight).sum();
            let count = slots_by_id(&table);
            for m in &ms {
                let want = f64::from(size) * f64::from(m.weight) / f64::from(total);
                let got = count[&m.id] as f64;
                // 1% of the member's own share, but at least one slot, the
                // quantum: a weight-1 member next to a weight-1000 one is owed
                // 64.95 slots and gets 64.
                assert!(
                    (got - want).abs() <= (0.01 * want).max(1.0),
                    "member {} weight {}: {got} slots, want {want:.1}",
                    m.key,
                    m.weight
                );
            }
        }
    }

    #[test]
    fn member_order_does_not_matter() {
        let k = keys(50);
        let ms = members(&k, |i| (i % 3) as u32 + 1);
        let size = table_size(ms.len());
        let table = build(&ms, size);

        let mut reversed = ms.clone();
        reversed.reverse();
        assert!(build(&reversed, size) == table, "reversed order");

        // A fixed Fisher-Yates shuffle driven by an LCG: no rand dependency.
        let mut shuffled = ms.clone();
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        for i in (1..shuffled.len()).rev() {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            shuffled.swap(i, (state >> 33) as usize % (i + 1));
        }
        assert_ne!(shuffled, ms);
        assert!(build(&shuffled, size) == table, "shuffled order");
    }

    #[test]
    fn ids_do_not_pick_the_permutation() {
        // Two agents that number the same reals differently agree slot by slot
        // on which real (by key) owns it.
        let k = keys(10);
        let a = members(&k, |_| 1);
        let b: Vec<Member> = a
            .iter()
            .map(|m| Member {
                id: m.id + 100,
                ..*m
            })
            .collect();
        let size = table_size(10);
        let (ta, tb) = (build(&a, size), build(&b, size));
        assert!(ta.iter().zip(&tb).all(|(x, y)| x + 100 == *y));
    }

    /// Bound on the fraction of ALL slots that may change owner when one of N
    /// equal members goes, beyond the 1/N it owned and which must move.
    /// Maglev moves a little more, because once the survivors have taken the
    /// freed slots their later picks shift. At M = 65,537 the extra measured
    /// 0.0001 (N=3), 0.0021 (N=10) and 0.0044 (N=50) of the table, growing
    /// with N/M as in the paper's Fig. 12; 0.01 leaves twice the worst of
    /// those and still catches any real regression: a modulo-N hash, or a
    /// table whose permutation depended on member order or ids, moves about
    /// 1 - 1/N.
    const EXTRA_DISRUPTION: f64 = 0.01;

    #[test]
    fn removing_one_member_moves_little_more_than_its_share() {
        for n in [3, 10, 50] {
            let k = keys(n);
            let all = members(&k, |_| 1);
            let size = table_size(n);
            let before = build(&all, size);
            let gone = all[n / 2].id;
            let rest: Vec<Member> = all.iter().filter(|m| m.id != gone).copied().collect();
            let after = build(&rest, size);

            let own = before.iter().filter(|&&id| id == gone).count();
            let changed = before.iter().zip(&after).filter(|(a, b)| a != b).count();
            let changed_others = changed - own;
            let total = changed as f64 / f64::from(size);
            let others = changed_others as f64 / (f64::from(size) - own as f64);
            let share = own as f64 / f64::from(size);
            println!(
                "maglev N={n} M={size}: removed member owned {share:.4} of slots (1/N = {:.4}); \
                 {total:.4} of all slots changed; {others:.4} of the other slots changed",
                1.0 / n as f64
            );
            assert!(after.iter().all(|&id| id != gone));
            assert!(
                (share - 1.0 / n as f64).abs() <= 0.01 / n as f64,
                "share {share}"
            );
            assert!(
                total <= 1.0 / n as f64 + EXTRA_DISRUPTION,
                "N={n}: {total} of slots changed"
            );

            // Adding it back gives the original table exactly.
            assert!(build(&all, size) == before);
        }
    }

    #[test]
    fn removing_and_readding_a_weighted_member_restores_the_table() {
        let k = keys(20);
        let all = members(&k, |i| (i % 4) as u32 + 1);
        let size = table_size(20);
        let before = build(&all, size);
        for gone in [0, 7, 19] {
            let rest: Vec<Member> = all
                .iter()
                .filter(|m| m.id != all[gone].id)
                .copied()
                .collect();
            let after = build(&rest, size);
            assert!(after != before && !after.contains(&all[gone].id));
            let mut back = rest.clone();
            back.insert(3, all[gone]);
            assert!(build(&back, size) == before, "re-adding member {gone}");
        }
    }

    #[test]
    fn empty_and_single_member() {
        assert!(build(&[], 65_537).is_empty());
        let only = Member {
            id: 7,
            key: "203.0.113.11:8080",
            weight: 3,
        };
        let table = build(&[only], 251);
        assert_eq!(table.len(), 251);
        assert!(table.iter().all(|&id| id == 7));
    }

    #[test]
    fn weight_zero_is_left_out() {
        let k = keys(4);
        let mut ms = members(&k, |_| 2);
        let size = table_size(4);
        let without = build(&ms[1..], size);
        ms[0].weight = 0;
        let with_zero = build(&ms, size);
        assert!(with_zero == without);
        assert!(!with_zero.contains(&ms[0].id));
        for m in &mut ms {
            m.weight = 0;
        }
        assert!(build(&ms, size).is_empty());
    }

    #[test]
    fn table_format_is_pinned() {
        // Agents of different versions must build the same table; this digest
        // changes if the hash, its keys or the fill order change.
        let k = keys(7);
        let table = build(&members(&k, |i| i as u32 + 1), 251);
        let bytes: Vec<u8> = table.iter().flat_map(|id| id.to_le_bytes()).collect();
        assert_eq!(&table[..8], &[6, 2, 7, 7, 3, 4, 7, 6]);
        assert_eq!(siphash24([0, 0], &bytes), 0x9ad9_a043_8dbf_b664);
    }

    #[test]
    fn largest_table_is_complete_and_timed() {
        // Correctness only; the println gives a rough build time (benchmarks
        // belong in benches/).
        for n in [100, 4096] {
            let k = keys(n);
            let ms = members(&k, |_| 1);
            let size = table_size(n);
            let start = Instant::now();
            let table = build(&ms, size);
            println!(
                "maglev build: {n} members, {size} slots in {:?}",
                start.elapsed()
            );
            assert_eq!(table.len(), size as usize);
            let count = slots_by_id(&table);
            assert_eq!(count.len(), n, "every member owns slots");
            let fair = f64::from(size) / n as f64;
            assert!(count.values().all(|&c| (c as f64 - fair).abs() <= 1.0));
        }
    }
}
