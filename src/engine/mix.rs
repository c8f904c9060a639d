//! SplitMix64's finalizer: a cheap, well-spread, stable 64-bit mix — the same in every build
//! and run, unlike std's randomly seeded hasher. The client-affinity hash (`dispatch`) and each
//! worker's share of the recycle jitter (`limits`) are made with it.

/// The finalizer: every output bit depends on every input bit; neighbouring inputs (consecutive
/// pids, addresses of one subnet) land far apart.
pub fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A number in [0, 1) from `seed`: SplitMix64's next output for that state, its top 53 bits.
pub fn unit(seed: u64) -> f64 {
    (mix(seed.wrapping_add(0x9e37_79b9_7f4a_7c15)) >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The values SplitMix64 gives, computed independently (Python): a sticky client's home
    /// must not move with a new build.
    #[test]
    fn the_mix_is_splitmix64() {
        assert_eq!(mix(1), 0x5692_161d_100b_05e5);
        assert_eq!(mix(0xdead_beef), 0x4e06_2702_ec92_9eea);
        // SplitMix64 seeded with 0: its first output is 0xe220a8397b1dcdaf.
        assert_eq!(
            unit(0),
            (0xe220_a839_7b1d_cdaf_u64 >> 11) as f64 / (1u64 << 53) as f64
        );
        assert!((0..10_000).map(unit).all(|u| (0.0..1.0).contains(&u)));
    }
}
