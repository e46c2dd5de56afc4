//! Mergeable sketches stored with each rollup row: DDSketch for latency
//! percentiles (relative error 0.5%, under the contract's 1%) and
//! HyperLogLog++ for distinct users (precision 16: standard error 0.4%,
//! exact-ish while small thanks to its sparse form; the contract asks 2%).
//! Both are stored as bincode bytes.

use std::hash::BuildHasher;

use hyperloglogplus::{HyperLogLog, HyperLogLogPlus};
use serde::{Deserialize, Serialize};
use sketches_ddsketch::{Config as DdConfig, DDSketch};

/// Relative accuracy of the latency sketch.
pub const LATENCY_ALPHA: f64 = 0.005;
/// HyperLogLog++ precision (2^16 registers once dense).
pub const USERS_PRECISION: u8 = 16;

/// A hash that is the same in every process and version, so sketches
/// written by one run merge with sketches written by another.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct StableHash;

impl BuildHasher for StableHash {
    type Hasher = xxhash_rust::xxh3::Xxh3;
    fn build_hasher(&self) -> Self::Hasher {
        xxhash_rust::xxh3::Xxh3::with_seed(0x6878_6a6f_6273)
    }
}

pub type Users = HyperLogLogPlus<str, StableHash>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("stored {what} sketch cannot be read: {reason}")]
    Decode { what: &'static str, reason: String },
    #[error("{what} sketches cannot be merged: {reason}")]
    Merge { what: &'static str, reason: String },
    #[error("{what} sketch cannot be encoded: {reason}")]
    Encode { what: &'static str, reason: String },
}

pub fn new_latency() -> DDSketch {
    DDSketch::new(DdConfig::new(LATENCY_ALPHA, 4096, 1e-3))
}

pub fn new_users() -> Users {
    // The precision is a constant in range; `new` only rejects others.
    HyperLogLogPlus::new(USERS_PRECISION, StableHash).unwrap_or_else(|_| unreachable!())
}

pub fn add_user(users: &mut Users, id: &str) {
    users.insert(id);
}

pub fn count_users(users: &mut Users) -> i64 {
    users.count().round() as i64
}

/// p in [0, 1] → the value at rank floor(p · (n − 1)), within the sketch's accuracy.
pub fn quantile(latency: &DDSketch, p: f64) -> Option<f64> {
    latency.quantile(p).ok().flatten()
}

pub fn encode_latency(s: &DDSketch) -> Result<Vec<u8>, Error> {
    bincode::serialize(s).map_err(|e| Error::Encode {
        what: "latency",
        reason: e.to_string(),
    })
}

pub fn encode_users(s: &Users) -> Result<Vec<u8>, Error> {
    bincode::serialize(s).map_err(|e| Error::Encode {
        what: "users",
        reason: e.to_string(),
    })
}

pub fn decode_latency(bytes: &[u8]) -> Result<DDSketch, Error> {
    bincode::deserialize(bytes).map_err(|e| Error::Decode {
        what: "latency",
        reason: e.to_string(),
    })
}

pub fn decode_users(bytes: &[u8]) -> Result<Users, Error> {
    bincode::deserialize(bytes).map_err(|e| Error::Decode {
        what: "users",
        reason: e.to_string(),
    })
}

pub fn merge_latency(into: &mut DDSketch, other: &DDSketch) -> Result<(), Error> {
    into.merge(other).map_err(|e| Error::Merge {
        what: "latency",
        reason: format!("{e:?}"),
    })
}

pub fn merge_users(into: &mut Users, other: &Users) -> Result<(), Error> {
    into.merge(other).map_err(|e| Error::Merge {
        what: "users",
        reason: format!("{e:?}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sketches_survive_encoding_and_merge() {
        let (mut a, mut b) = (new_latency(), new_latency());
        let (mut ua, mut ub) = (new_users(), new_users());
        for i in 1..=1000u32 {
            let target = if i % 2 == 0 { &mut a } else { &mut b };
            target.add(f64::from(i));
            let users = if i % 3 == 0 { &mut ua } else { &mut ub };
            add_user(users, &format!("user-{}", i % 700));
        }
        let mut a = decode_latency(&encode_latency(&a).expect("enc")).expect("dec");
        merge_latency(&mut a, &b).expect("merge");
        let p95 = quantile(&a, 0.95).expect("p95");
        // rank floor(0.95 · 999) = 949 → the value 950
        assert!((p95 - 950.0).abs() / 950.0 <= 0.01, "{p95}");
        let mut ua = decode_users(&encode_users(&ua).expect("enc")).expect("dec");
        merge_users(&mut ua, &ub).expect("merge");
        let n = count_users(&mut ua);
        assert!((n - 700).abs() <= 14, "{n}");
    }
}
