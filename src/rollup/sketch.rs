//! Mergeable sketches stored with each rollup row: DDSketch for latency
//! percentiles (relative error 0.5%, under the contract's 1%) and
//! HyperLogLog++ for distinct users (precision 16: standard error 0.4%,
//! exact-ish while small thanks to its sparse form; the contract asks 2%).
//! Both are stored versioned: `HXS2` then MessagePack with field names
//! ([`encode_latency`]); rows written before that (hxjobs 0.1's bincode 1
//! layout, no marker) are still read ([`super::legacy`]).

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

/// The first bytes of every sketch written now: the format and its version.
pub const MARKER: &[u8; 4] = b"HXS2";

fn encode<T: Serialize>(what: &'static str, s: &T) -> Result<Vec<u8>, Error> {
    let mut out = MARKER.to_vec();
    rmp_serde::encode::write_named(&mut out, s).map_err(|e| Error::Encode {
        what,
        reason: e.to_string(),
    })?;
    Ok(out)
}

fn decode<T: serde::de::DeserializeOwned>(what: &'static str, bytes: &[u8]) -> Result<T, Error> {
    let reason = match bytes.strip_prefix(MARKER.as_slice()) {
        Some(body) => match rmp_serde::from_slice(body) {
            Ok(v) => return Ok(v),
            Err(e) => e.to_string(),
        },
        None => match super::legacy::decode(bytes) {
            Ok(v) => return Ok(v),
            Err(e) => format!("neither {MARKER:?} nor the 0.1 layout: {e}"),
        },
    };
    Err(Error::Decode { what, reason })
}

pub fn encode_latency(s: &DDSketch) -> Result<Vec<u8>, Error> {
    encode("latency", s)
}

pub fn encode_users(s: &Users) -> Result<Vec<u8>, Error> {
    encode("users", s)
}

pub fn decode_latency(bytes: &[u8]) -> Result<DDSketch, Error> {
    decode("latency", bytes)
}

pub fn decode_users(bytes: &[u8]) -> Result<Users, Error> {
    decode("users", bytes)
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

    /// The same sketches every time: latencies 1..=200 ms, users u0..u149.
    fn fixed() -> (DDSketch, Users) {
        let (mut l, mut u) = (new_latency(), new_users());
        for i in 1..=200u32 {
            l.add(f64::from(i));
            add_user(&mut u, &format!("u{}", i % 150));
        }
        (l, u)
    }

    fn unhex(text: &str) -> Vec<u8> {
        let text: String = text.split_whitespace().collect();
        (0..text.len() / 2)
            .filter_map(|i| u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok())
            .collect()
    }

    fn same_latency(a: &DDSketch, b: &DDSketch) {
        assert_eq!(a.count(), b.count());
        for p in [0.0, 0.5, 0.95, 0.99, 1.0] {
            assert_eq!(quantile(a, p), quantile(b, p), "p{p}");
        }
    }

    /// Golden bytes: `fixed()` as hxjobs 0.1 stored it (bincode 1) and as
    /// it is stored now. Both stay readable; the new bytes do not change.
    #[test]
    fn stored_sketches_of_every_version_are_read_and_the_encoding_is_stable() {
        let (l, mut u) = fixed();
        let users = count_users(&mut u);
        assert_eq!(users, 150);
        for (name, latency, users_bytes) in [
            (
                "0.1",
                include_str!("golden/latency_v1.hex"),
                include_str!("golden/users_v1.hex"),
            ),
            (
                "HXS2",
                include_str!("golden/latency_v2.hex"),
                include_str!("golden/users_v2.hex"),
            ),
        ] {
            let old = decode_latency(&unhex(latency)).expect(name);
            same_latency(&old, &l);
            let mut old = decode_users(&unhex(users_bytes)).expect(name);
            assert_eq!(count_users(&mut old), users, "{name}");
            merge_users(&mut old, &u).expect("merges with a new one");
        }
        let now = encode_latency(&l).expect("encode");
        assert_eq!(now, unhex(include_str!("golden/latency_v2.hex")));
        assert!(now.starts_with(MARKER));
        // Damaged bytes are an error, never a panic.
        for bad in [&now[..now.len() / 2], b"HXS2\xff", b"", &[1u8; 7][..]] {
            assert!(decode_latency(bad).is_err());
            assert!(decode_users(bad).is_err());
        }
    }
}
