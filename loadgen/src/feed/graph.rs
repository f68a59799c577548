//! The synthetic follow graph and who posts: generated from a seed, so a
//! later run (`--skip-setup`, or the Redis target) rebuilds exactly the graph
//! that was loaded into the daemon. Owns the popularity law; it does no I/O.
//!
//! Users are `1..=n`; user `i + 1` has popularity rank `i`. The
//! [`CELEBRITY_SHARES`] first users are celebrities, each followed by that
//! share of everyone (≥ 1M followers from about 1.09M users). Every user also
//! follows 5 + Exp(15) others (mean 20, "tens"), drawn from a shifted
//! power law over the remaining ranks: P(rank r) ∝ 1 / (r + 10), so the head
//! has ~10⁵ followers and the median user a handful.

/// Share of all users following each celebrity.
pub(super) const CELEBRITY_SHARES: [f64; 3] = [0.95, 0.93, 0.92];
/// Follows a user makes besides the celebrities: the minimum…
const MIN_FOLLOWS: f64 = 5.0;
/// …plus an exponential of this mean.
const MEAN_EXTRA_FOLLOWS: f64 = 15.0;
/// At most this many follows per user, celebrities included: under the
/// protocol's 256 feed requests in flight per connection, so a user's
/// follows go out in one pipelined write.
pub(super) const MAX_FOLLOWS: usize = 250;
/// Offset of the follow law: flattens the head below the celebrities.
const FOLLOW_OFFSET: f64 = 10.0;
/// Offset of the posting law: popular accounts post more often than others,
/// but not in proportion to their followers (a celebrity posts ~0.1% of all
/// posts at 1.1M users; with the follow law's offset it would be ~1%).
const POST_OFFSET: f64 = 100.0;

/// A compressed adjacency list: `targets[offsets[u]..offsets[u + 1]]`.
struct Adjacency {
    offsets: Vec<u64>,
    targets: Vec<u32>,
}

impl Adjacency {
    fn of(&self, index: usize) -> &[u32] {
        &self.targets[self.offsets[index] as usize..self.offsets[index + 1] as usize]
    }
}

/// Who follows whom, both ways, by user index (user id − 1).
pub(crate) struct Graph {
    following: Adjacency,
    followers: Adjacency,
}

/// P(rank) ∝ 1 / (rank + offset) over `0..ranks`, by inverting the
/// continuous law's CDF.
fn power_law(rng: &mut fastrand::Rng, ranks: usize, offset: f64) -> usize {
    let span = (ranks as f64 + offset) / offset;
    let r = offset * (span.powf(rng.f64()) - 1.0);
    (r as usize).min(ranks - 1)
}

/// The number of celebrities among `n` users: none in very small graphs.
pub(super) fn celebrities(n: usize) -> usize {
    if n >= 100 {
        CELEBRITY_SHARES.len()
    } else {
        0
    }
}

impl Graph {
    /// Generates the graph of `n` users (n ≥ 2) for `seed`, also capping each
    /// user's follows at `max_following` (the daemon's limit).
    pub(crate) fn generate(n: usize, seed: u64, max_following: usize) -> Self {
        assert!((2..=u32::MAX as usize).contains(&n), "2 ≤ users ≤ 2^32");
        let cap = max_following.min(MAX_FOLLOWS);
        let celebs = celebrities(n);
        let mut offsets = Vec::with_capacity(n + 1);
        let mut targets = Vec::with_capacity(n * 24);
        let mut mine = Vec::new();
        offsets.push(0);
        for u in 0..n {
            // One stream per user: the same graph whatever the order of generation.
            let mut rng = fastrand::Rng::with_seed(seed ^ (u as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
            mine.clear();
            for (c, share) in CELEBRITY_SHARES.iter().enumerate().take(celebs) {
                if c != u && rng.f64() < *share && mine.len() < cap {
                    mine.push(c as u32);
                }
            }
            let extra = MIN_FOLLOWS - MEAN_EXTRA_FOLLOWS * (1.0 - rng.f64()).ln();
            let wanted = (mine.len() + extra as usize).min(cap).min(n - 1);
            // Popular accounts are drawn again and again: give up on a user's
            // duplicates after a bounded number of tries.
            let mut tries = wanted * 4;
            while mine.len() < wanted && tries > 0 {
                tries -= 1;
                let target = (celebs + power_law(&mut rng, n - celebs, FOLLOW_OFFSET)) as u32;
                if target as usize != u && !mine.contains(&target) {
                    mine.push(target);
                }
            }
            targets.extend_from_slice(&mine);
            offsets.push(targets.len() as u64);
        }
        let following = Adjacency { offsets, targets };
        let followers = transpose(&following, n);
        Self { following, followers }
    }

    pub(crate) fn users(&self) -> usize {
        self.following.offsets.len() - 1
    }

    pub(crate) fn edges(&self) -> usize {
        self.following.targets.len()
    }

    /// The indices `index` follows.
    pub(crate) fn following(&self, index: usize) -> &[u32] {
        self.following.of(index)
    }

    /// The indices following `index`.
    pub(crate) fn followers(&self, index: usize) -> &[u32] {
        self.followers.of(index)
    }

    /// A post's author by the posting law (celebrities included).
    pub(crate) fn author(&self, rng: &mut fastrand::Rng) -> usize {
        power_law(rng, self.users(), POST_OFFSET)
    }
}

fn transpose(forward: &Adjacency, n: usize) -> Adjacency {
    let mut counts = vec![0u64; n + 1];
    for &t in &forward.targets {
        counts[t as usize + 1] += 1;
    }
    for i in 1..=n {
        counts[i] += counts[i - 1];
    }
    let offsets = counts.clone();
    let mut targets = vec![0u32; forward.targets.len()];
    for u in 0..n {
        for &t in forward.of(u) {
            let at = &mut counts[t as usize];
            targets[*at as usize] = u as u32;
            *at += 1;
        }
    }
    Adjacency { offsets, targets }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generation_is_deterministic_and_well_formed() {
        let a = Graph::generate(5_000, 7, 5_000);
        let b = Graph::generate(5_000, 7, 5_000);
        assert_eq!(a.following.targets, b.following.targets);
        assert_ne!(a.following.targets, Graph::generate(5_000, 8, 5_000).following.targets);
        for u in 0..a.users() {
            let mine = a.following(u);
            assert!(!mine.contains(&(u as u32)), "no self follow");
            let mut sorted = mine.to_vec();
            sorted.sort_unstable();
            sorted.dedup();
            assert_eq!(sorted.len(), mine.len(), "no duplicate follow");
            for &t in mine {
                assert!(a.followers(t as usize).contains(&(u as u32)));
            }
        }
        let followers: usize = (0..a.users()).map(|u| a.followers(u).len()).sum();
        assert_eq!(followers, a.edges());
    }

    #[test]
    fn followers_follow_a_power_law_with_celebrities_on_top() {
        let n = 100_000;
        let g = Graph::generate(n, 1, 5_000);
        let mean = g.edges() as f64 / n as f64;
        assert!((18.0..28.0).contains(&mean), "{mean}");
        for (c, share) in CELEBRITY_SHARES.iter().enumerate() {
            let f = g.followers(c).len() as f64 / n as f64;
            assert!((f - share).abs() < 0.01, "celebrity {c}: {f}");
        }
        let head = g.followers(celebrities(n)).len();
        let tenth = g.followers(celebrities(n) + 100).len();
        let median = {
            let mut counts: Vec<usize> = (0..n).map(|u| g.followers(u).len()).collect();
            counts.sort_unstable();
            counts[n / 2]
        };
        assert!(head > 5 * tenth && tenth > 5 * median.max(1), "{head} {tenth} {median}");
    }

    #[test]
    fn follows_respect_the_cap() {
        let g = Graph::generate(2_000, 3, 4);
        assert!((0..g.users()).all(|u| g.following(u).len() <= 4));
        let tiny = Graph::generate(2, 3, 5_000);
        assert!(tiny.following(0).iter().all(|&t| t == 1));
    }

    #[test]
    fn authors_include_celebrities_but_mostly_others() {
        let g = Graph::generate(10_000, 1, 5_000);
        let mut rng = fastrand::Rng::with_seed(1);
        let authors: Vec<usize> = (0..100_000).map(|_| g.author(&mut rng)).collect();
        let celebs = authors.iter().filter(|&&a| a < celebrities(10_000)).count();
        assert!(celebs > 0 && celebs < 5_000, "{celebs}");
        assert!(authors.iter().all(|&a| a < g.users()));
    }
}
