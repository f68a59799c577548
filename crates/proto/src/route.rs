//! Routing in a cluster (SPEC.md §14): which partition a user belongs to
//! and which member owns a partition, as pure functions of the user, the
//! member names and the partition count.
//!
//! Owns the two hashes every node, gateway and SDK must compute alike (they
//! are part of the protocol: a gateway that computes another owner than the
//! nodes gets MOVED). It must not know who the members are or how a map is
//! learnt: the server's membership lives in heartline-core, the SDKs fetch
//! the map with CLUSTER_MAP.

/// Most partitions a cluster may have.
pub const MAX_PARTITIONS: u32 = 65_536;
/// Longest member name, in bytes (`[A-Za-z0-9_-]`).
pub const MAX_NODE: usize = 64;
/// Longest address (`host:port`) or WebSocket URL of a member, in bytes.
pub const MAX_ADDR: usize = 255;
/// Most members a CLUSTER_MAP_REPLY may list.
pub const MAX_MEMBERS: usize = 1_024;

const GOLDEN: u64 = 0x9e37_79b9_7f4a_7c15;

/// SplitMix64's finalizer: a fixed, well-mixed 64-bit permutation.
pub const fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// FNV-1a, 64 bits, of a member's name.
pub fn name_hash(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3))
}

/// The partition of `user` among `partitions` (0 counts as 1).
pub fn partition_of(user: u64, partitions: u32) -> u32 {
    // The remainder of a well-mixed u64: bias below 2^-48 for 65,536 partitions.
    (mix(user ^ GOLDEN) % u64::from(partitions.max(1))) as u32
}

/// The rendezvous weight, for `partition`, of the member whose name hashes
/// to `node` ([`name_hash`]).
pub fn weight(node: u64, partition: u32) -> u64 {
    mix(node ^ mix(u64::from(partition).wrapping_add(GOLDEN)))
}

/// The index in `names` of the owner of `partition`: the highest weight,
/// ties to the smaller name; `None` when `names` is empty.
pub fn owner_index<'a>(names: impl IntoIterator<Item = &'a str>, partition: u32) -> Option<usize> {
    let mut best: Option<(usize, u64, &str)> = None;
    for (i, name) in names.into_iter().enumerate() {
        let w = weight(name_hash(name), partition);
        match best {
            Some((_, bw, bn)) if w < bw || (w == bw && name >= bn) => {}
            _ => best = Some((i, w, name)),
        }
    }
    best.map(|(i, _, _)| i)
}

/// The index in `names` of the member owning `user`'s partition.
pub fn owner_of<'a>(names: impl IntoIterator<Item = &'a str>, user: u64, partitions: u32) -> Option<usize> {
    owner_index(names, partition_of(user, partitions))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The worked examples of SPEC.md §14.2: any change here is a protocol change.
    #[test]
    fn spec_vectors() {
        assert_eq!(name_hash(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(name_hash("a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(name_hash("hl-1"), 0x5a59_36cc_8d50_2b0f);
        assert_eq!(mix(1 ^ GOLDEN), 0xe4d9_7177_1b65_2c20);
        let names = ["hl-1", "hl-2", "hl-3"];
        assert_eq!(owner_index(names, 0), Some(1));
        assert_eq!(owner_index(names, 7), Some(0));
        assert_eq!(owner_of(names, 1, 1024), Some(2));
        for (user, partitions, partition) in SPEC_PARTITIONS {
            assert_eq!(partition_of(user, partitions), partition, "user {user}");
        }
        for (name, partition, w) in SPEC_WEIGHTS {
            assert_eq!(weight(name_hash(name), partition), w, "{name} {partition}");
        }
    }

    const SPEC_PARTITIONS: [(u64, u32, u32); 5] =
        [(0, 1024, 431), (1, 1024, 32), (42, 1024, 661), (1_000_000, 1024, 555), (u64::MAX, 1024, 196)];
    const SPEC_WEIGHTS: [(&str, u32, u64); 6] = [
        ("hl-1", 0, 0x86a3_a425_30cb_e129),
        ("hl-2", 0, 0xf32c_17e3_c291_fc64),
        ("hl-3", 0, 0x2f69_03e4_4843_293a),
        ("hl-1", 7, 0xeacb_fa85_5867_4d1c),
        ("hl-2", 7, 0x17c3_638f_842b_d579),
        ("hl-3", 7, 0x9cd2_3d3b_38fe_1b77),
    ];

    #[test]
    fn ties_go_to_the_smaller_name() {
        assert_eq!(owner_index(["b", "b"], 3), Some(0));
        assert_eq!(owner_index(Vec::<&str>::new(), 3), None);
        // The order of the list does not matter.
        for p in 0..64 {
            let a = owner_index(["hl-1", "hl-2", "hl-3"], p).map(|i| ["hl-1", "hl-2", "hl-3"][i]);
            let b = owner_index(["hl-3", "hl-1", "hl-2"], p).map(|i| ["hl-3", "hl-1", "hl-2"][i]);
            assert_eq!(a, b);
        }
    }
}
