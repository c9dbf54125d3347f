//! Session ids: drawn uniformly from [2^32, 2^53) by the OS CSPRNG, so a client that
//! knows its own id learns nothing about anyone else's, and every id is exact in a
//! JavaScript number. Ids below 2^32 were counted up by the database before that and
//! stay valid; a drawn id never lands among them.

use std::ops::Range;

/// Where new session ids are drawn from.
pub const SESSION_IDS: Range<i64> = (1 << 32)..(1 << 53);

/// How many ids `create` draws before it gives up. With millions of sessions a draw
/// collides about once in a billion, so a second draw is already beyond need.
pub const CREATE_ATTEMPTS: u32 = 4;

/// A uniformly random id in [`SESSION_IDS`], from the OS CSPRNG.
pub fn random_id() -> i64 {
    loop {
        // The OS source does not fail once the kernel has seeded it, which it has long
        // before a request arrives; `Uuid::new_v4` for the task id panics likewise.
        let bits = getrandom::u64().expect("the OS random number generator failed");
        // The top 53 bits are uniform in [0, 2^53); dropping the draws below 2^32 (one in
        // two million) leaves them uniform over the range, with no modulo bias.
        let id = (bits >> 11) as i64;
        if SESSION_IDS.contains(&id) {
            return id;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn session_ids_are_above_2_32_and_exact_in_javascript() {
        assert_eq!(SESSION_IDS.start, 4_294_967_296);
        assert_eq!(SESSION_IDS.end, 9_007_199_254_740_992);
        let ids: Vec<i64> = (0..10_000).map(|_| random_id()).collect();
        for &id in &ids {
            assert!(SESSION_IDS.contains(&id), "{id}");
        }
        assert_eq!(ids.iter().collect::<HashSet<_>>().len(), ids.len());
        // Uniform over the range: about half the draws are in its upper half (which
        // starts at 2^52 plus a little), and the lower half is not empty either. Ten
        // thousand draws stray past 45%..55% with odds of about one in 10^23.
        let middle = SESSION_IDS.start + (SESSION_IDS.end - SESSION_IDS.start) / 2;
        let upper = ids.iter().filter(|&&id| id >= middle).count();
        assert!(
            (4_500..=5_500).contains(&upper),
            "{upper} of 10000 in the upper half"
        );
    }
}
