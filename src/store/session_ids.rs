//! Session ids: a keyed permutation of a counter.
//!
//! Each session takes the next number of a counter, and its id is that number through
//! a Feistel network keyed by a secret kept in PostgreSQL: ids are in [2^32, 2^53),
//! above every id counted before ids were random and exact in a JavaScript number; they
//! look random (one id tells nothing of another, so no client can guess one), and never
//! collide. The permutation is what lets a purged
//! session answer 410 rather than 404 without keeping anything per session: the purge
//! records the highest counter value it removed, and an id that is not in the table is
//! a purged session's when its counter value is at or below that mark. An id never
//! handed out is the permutation of a number far above every counter value (the
//! counter is a tiny part of the 2^53 numbers, and without the secret no one can aim
//! below it), so it answers 404.
//!
//! The counter is a PostgreSQL sequence of blocks of [`BLOCK`] numbers: a serve takes a
//! block in one round trip and hands its numbers out from memory, so ids cost no round
//! trip of their own. Ids given before this scheme (random, or counted below 2^32) stay
//! valid; they answer 404 once purged.

use std::ops::Range;

use deadpool_postgres::Pool;
use sha2::{Digest, Sha256};
use tokio::sync::{Mutex, OnceCell};

use super::postgres::failed;
use crate::dependency::{within, Dependency, Unavailable};

/// Counter values per block.
pub const BLOCK: i64 = 1024;

/// Ids, and the counter values they stand for: above every id counted before ids were
/// random, and exact as JavaScript numbers.
pub const IDS: Range<i64> = (1 << 32)..(1 << 53);

/// Each half of the Feistel network: the network permutes 54-bit numbers, and an output
/// outside [`IDS`] is sent through again (cycle walking) until it is an id: two passes on
/// average.
const HALF_BITS: u32 = 27;

/// Rounds of the network; four make a keyed pseudo-random permutation (Luby-Rackoff),
/// and a few more cost nothing that matters.
const ROUNDS: u8 = 8;

/// How many ids `create` tries before it gives up: a new id collides only with one given
/// before this scheme, about once in a billion sessions.
pub const CREATE_ATTEMPTS: u32 = 4;

/// The keyed permutation between counter values and ids.
#[derive(Clone)]
pub struct Cipher {
    key: [u8; 32],
}

impl Cipher {
    pub fn new(key: [u8; 32]) -> Self {
        Self { key }
    }

    /// The id of counter value `n`, in [`IDS`].
    pub fn id(&self, n: i64) -> i64 {
        debug_assert!(is_id(n), "{n}");
        let mut x = n as u64;
        loop {
            x = self.forward(x);
            if is_id(x as i64) {
                return x as i64;
            }
        }
    }

    /// The counter value of `id`: the inverse of [`Self::id`].
    pub fn number(&self, id: i64) -> i64 {
        debug_assert!(is_id(id), "{id}");
        let mut x = id as u64;
        loop {
            x = self.backward(x);
            if is_id(x as i64) {
                return x as i64;
            }
        }
    }

    fn forward(&self, x: u64) -> u64 {
        let (mut left, mut right) = (x >> HALF_BITS, x & half_mask());
        for round in 0..ROUNDS {
            (left, right) = (right, left ^ self.round(round, right));
        }
        (left << HALF_BITS) | right
    }

    fn backward(&self, x: u64) -> u64 {
        let (mut left, mut right) = (x >> HALF_BITS, x & half_mask());
        for round in (0..ROUNDS).rev() {
            (left, right) = (right ^ self.round(round, left), left);
        }
        (left << HALF_BITS) | right
    }

    /// The round function: SHA-256 of the key, the round and the half, cut to a half.
    fn round(&self, round: u8, half: u64) -> u64 {
        let digest = Sha256::new()
            .chain_update(self.key)
            .chain_update([round])
            .chain_update(half.to_le_bytes())
            .finalize();
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(&digest[..8]);
        u64::from_le_bytes(bytes) & half_mask()
    }
}

fn half_mask() -> u64 {
    (1 << HALF_BITS) - 1
}

/// Whether `n` is in the range of ids (and counter values).
fn is_id(n: i64) -> bool {
    IDS.contains(&n)
}

/// Hands out ids and tells purged ones from ids never given.
pub struct SessionIds {
    pool: Pool,
    timeout: std::time::Duration,
    cipher: OnceCell<Cipher>,
    /// The counter values of this serve's current block not handed out yet.
    free: Mutex<Range<i64>>,
}

impl SessionIds {
    pub fn new(pool: Pool, timeout: std::time::Duration) -> Self {
        Self {
            pool,
            timeout,
            cipher: OnceCell::new(),
            free: Mutex::new(0..0),
        }
    }

    /// `n` new ids, taking blocks from the counter as needed.
    pub async fn take(&self, n: usize) -> Result<Vec<i64>, Unavailable> {
        let cipher = self.cipher().await?.clone();
        let mut free = self.free.lock().await;
        let mut numbers = Vec::with_capacity(n);
        while numbers.len() < n {
            if free.is_empty() {
                let wanted = (n - numbers.len()) as u64;
                *free = self.blocks(wanted.div_ceil(BLOCK as u64) as i64).await?;
            }
            let take = (n - numbers.len()).min((free.end - free.start) as usize);
            numbers.extend(free.start..free.start + take as i64);
            free.start += take as i64;
        }
        drop(free);
        Ok(numbers.into_iter().map(|n| cipher.id(n)).collect())
    }

    /// The counter values of `count` fresh blocks, in one round trip. Block `b` holds
    /// the [`BLOCK`] values from 2^32 + `b` × [`BLOCK`]. Consecutive blocks are the rule,
    /// but blocks another serve took in between are skipped.
    async fn blocks(&self, count: i64) -> Result<Range<i64>, Unavailable> {
        within(Dependency::Postgres, self.timeout, async {
            let client = self.client().await?;
            let rows = client
                .query(
                    "SELECT nextval('session_blocks') FROM generate_series(1, $1::bigint)",
                    &[&count],
                )
                .await
                .map_err(failed)?;
            let mut blocks: Vec<i64> = rows.iter().map(|row| row.get(0)).collect();
            blocks.sort_unstable();
            // The longest run of consecutive blocks from the first: usually all of them.
            let first = blocks[0];
            let run = blocks
                .iter()
                .enumerate()
                .take_while(|(i, b)| **b == first + *i as i64)
                .count() as i64;
            Ok(IDS.start + first * BLOCK..IDS.start + (first + run) * BLOCK)
        })
        .await
    }

    /// Which of `ids`, which are in no session row, were purged: their counter value is
    /// at or below the highest one the purge removed.
    pub async fn purged(&self, ids: &[i64]) -> Result<Vec<i64>, Unavailable> {
        let ids: Vec<i64> = ids.iter().copied().filter(|id| is_id(*id)).collect();
        if ids.is_empty() {
            return Ok(ids);
        }
        let cipher = self.cipher().await?;
        let through: i64 = within(Dependency::Postgres, self.timeout, async {
            let client = self.client().await?;
            let row = client
                .query_one("SELECT purged_through FROM session_ids", &[])
                .await
                .map_err(failed)?;
            Ok(row.get(0))
        })
        .await?;
        Ok(ids
            .into_iter()
            .filter(|id| cipher.number(*id) <= through)
            .collect())
    }

    /// The highest counter value among removed sessions' `ids` that this scheme gave:
    /// those up to the last block's end. (Ids given before it fall outside, almost
    /// surely.)
    pub async fn highest_given(
        &self,
        ids: &[i64],
        client: &impl deadpool_postgres::GenericClient,
    ) -> Result<Option<i64>, Unavailable> {
        if ids.is_empty() {
            return Ok(None);
        }
        let cipher = self.cipher().await?;
        let last: i64 = client
            .query_one(
                "SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM session_blocks",
                &[],
            )
            .await
            .map_err(failed)?
            .get(0);
        let end = IDS.start + (last + 1) * BLOCK;
        Ok(ids
            .iter()
            .filter(|id| is_id(**id))
            .map(|id| cipher.number(*id))
            .filter(|number| *number < end)
            .max())
    }

    /// The key: read from PostgreSQL, where the first serve to need it put a random one.
    pub async fn cipher(&self) -> Result<&Cipher, Unavailable> {
        self.cipher
            .get_or_try_init(|| async {
                within(Dependency::Postgres, self.timeout, async {
                    let client = self.client().await?;
                    let fresh = getrandom::u64()
                        .and_then(|a| {
                            Ok([a, getrandom::u64()?, getrandom::u64()?, getrandom::u64()?])
                        })
                        .map_err(|e| Unavailable::new(Dependency::Postgres, e.to_string()))?;
                    let fresh: Vec<u8> = fresh.iter().flat_map(|w| w.to_le_bytes()).collect();
                    let row = client
                        .query_one(
                            "UPDATE session_ids SET secret = COALESCE(secret, $1) RETURNING secret",
                            &[&fresh],
                        )
                        .await
                        .map_err(failed)?;
                    let secret: Vec<u8> = row.get(0);
                    let key: [u8; 32] = secret.try_into().map_err(|_| {
                        Unavailable::new(Dependency::Postgres, "session_ids.secret is not 32 bytes")
                    })?;
                    Ok(Cipher::new(key))
                })
                .await
            })
            .await
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, Unavailable> {
        self.pool
            .get()
            .await
            .map_err(|e| Unavailable::from_chain(Dependency::Postgres, &e))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    fn cipher() -> Cipher {
        Cipher::new(*b"0123456789abcdef0123456789abcdef")
    }

    #[test]
    fn ids_are_a_permutation_of_counter_values_below_2_53() {
        let c = cipher();
        let mut ids = HashSet::new();
        for n in (IDS.start..IDS.start + 5000).chain([IDS.end - 1]) {
            let id = c.id(n);
            assert!(IDS.contains(&id), "{n} -> {id}");
            assert_eq!(c.number(id), n, "{n} -> {id}");
            assert!(ids.insert(id), "{id} twice");
        }
    }

    #[test]
    fn consecutive_counter_values_give_ids_spread_over_the_range() {
        let c = cipher();
        let ids: Vec<i64> = (IDS.start..IDS.start + 10_000).map(|n| c.id(n)).collect();
        let upper = ids.iter().filter(|&&id| id >= 1 << 52).count();
        // Half in the upper half; ten thousand draws stray past 45%..55% with odds of
        // about one in 10^23.
        assert!((4_500..=5_500).contains(&upper), "{upper}");
        // Neighbours are far apart.
        let close = ids
            .windows(2)
            .filter(|w| (w[0] - w[1]).abs() < 1 << 40)
            .count();
        assert!(close < 10, "{close} of 10000 neighbours within 2^40");
    }

    #[test]
    fn another_key_is_another_permutation() {
        let other = Cipher::new([7; 32]);
        let c = cipher();
        let same = (IDS.start..IDS.start + 1000)
            .filter(|&n| c.id(n) == other.id(n))
            .count();
        assert_eq!(same, 0);
    }

    #[test]
    fn an_id_no_one_was_given_maps_far_above_the_counter() {
        // What `purged` relies on: an id picked without the key has a counter value
        // spread over the whole range, almost never among the few handed out.
        let c = cipher();
        let guessed = (1..=10_000_i64).map(|k| IDS.start + k * 899_999_999_977 % (1 << 52));
        let low = guessed
            .filter(|&id| c.number(id) < IDS.start + (1 << 40))
            .count();
        assert!(
            low < 10,
            "{low} of 10000 guesses among the first 2^40 values"
        );
    }
}
