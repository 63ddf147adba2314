//! UUIDv7 event ids (RFC 9562): 48 bits of Unix milliseconds, then a counter and random bits.
//!
//! Ids made by one generator are strictly increasing, also within one millisecond, so they append
//! to the event-id index instead of touching random pages (the id scheme decides ingest speed).
//! Canonical UUID strings are stored as 16-byte blobs, less than half the bytes of their text.

use std::hash::BuildHasher;

use bespoke_algo::Rng;

/// Makes strictly increasing UUIDv7 ids.
#[derive(Debug)]
pub struct Uuid7Generator {
    rng: Rng,
    last_ms: u64,
    counter: u16,
}

impl Default for Uuid7Generator {
    fn default() -> Self {
        Self::new()
    }
}

impl Uuid7Generator {
    /// A generator seeded from the process's random hasher keys (OS randomness).
    pub fn new() -> Self {
        let seed = std::hash::RandomState::new().hash_one(std::process::id());
        Self {
            rng: Rng::seed_from_u64(seed),
            last_ms: 0,
            counter: 0,
        }
    }

    /// The next id for the time `now_ms`, as 16 bytes. If the clock went backwards, time is held
    /// at the last value used so that ids keep increasing.
    pub fn next_bytes(&mut self, now_ms: u64) -> [u8; 16] {
        if now_ms > self.last_ms {
            self.last_ms = now_ms;
            // Start the counter in its lower half so that a burst has room to count up.
            self.counter = (self.rng.next_u64() & 0x7ff) as u16;
        } else {
            self.counter += 1;
            if self.counter > 0xfff {
                self.last_ms += 1;
                self.counter = 0;
            }
        }
        let ms = self.last_ms & 0xffff_ffff_ffff;
        let rand_b = self.rng.next_u64() & 0x3fff_ffff_ffff_ffff;
        let hi = (ms << 16) | 0x7000 | self.counter as u64;
        let lo = 0x8000_0000_0000_0000 | rand_b;
        let mut out = [0u8; 16];
        out[..8].copy_from_slice(&hi.to_be_bytes());
        out[8..].copy_from_slice(&lo.to_be_bytes());
        out
    }

    /// The next id for the time `now_ms`, as a canonical UUID string.
    pub fn next(&mut self, now_ms: u64) -> String {
        format_uuid(&self.next_bytes(now_ms))
    }
}

/// The canonical lowercase hyphenated form of 16 bytes.
pub(crate) fn format_uuid(b: &[u8; 16]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(36);
    for (i, byte) in b.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            s.push('-');
        }
        s.push(HEX[(byte >> 4) as usize] as char);
        s.push(HEX[(byte & 15) as usize] as char);
    }
    s
}

/// The 16 bytes of a canonical lowercase hyphenated UUID string; `None` for any other string,
/// which is then kept verbatim so that every id round-trips exactly.
pub(crate) fn parse_uuid(s: &str) -> Option<[u8; 16]> {
    let s = s.as_bytes();
    if s.len() != 36 {
        return None;
    }
    let mut out = [0u8; 16];
    let mut nibbles = 0usize;
    for (i, &c) in s.iter().enumerate() {
        let v = match (i, c) {
            (8 | 13 | 18 | 23, b'-') => continue,
            (8 | 13 | 18 | 23, _) => return None,
            (_, b'0'..=b'9') => c - b'0',
            (_, b'a'..=b'f') => c - b'a' + 10,
            _ => return None,
        };
        out[nibbles / 2] |= if nibbles.is_multiple_of(2) { v << 4 } else { v };
        nibbles += 1;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn ids_are_well_formed_and_strictly_increasing() {
        let mut g = Uuid7Generator::new();
        let mut prev = String::new();
        for i in 0..10_000u64 {
            // Many ids per millisecond, and one step back in time.
            let now = 1_700_000_000_000 + i / 1000 - u64::from(i == 5000) * 3;
            let id = g.next(now);
            assert_eq!(id.len(), 36);
            assert_eq!(&id[14..15], "7", "version nibble in {id}");
            assert!(
                matches!(&id[19..20], "8" | "9" | "a" | "b"),
                "variant in {id}"
            );
            assert!(id > prev, "{id} <= {prev}");
            prev = id;
        }
        let first = Uuid7Generator::new().next(0x0123_4567_89ab);
        assert!(first.starts_with("01234567-89ab-7"), "{first}");
    }

    proptest! {
        #[test]
        fn uuid_text_round_trips(bytes in proptest::array::uniform16(any::<u8>())) {
            let s = format_uuid(&bytes);
            prop_assert_eq!(parse_uuid(&s), Some(bytes));
        }

        #[test]
        fn only_canonical_strings_parse(s in "\\PC{0,40}") {
            if let Some(b) = parse_uuid(&s) {
                prop_assert_eq!(format_uuid(&b), s);
            }
        }
    }

    #[test]
    fn non_canonical_forms_stay_text() {
        assert!(parse_uuid("0190A6B2-0000-7000-8000-000000000000").is_none());
        assert!(parse_uuid("0190a6b200007000-8000-000000000000-").is_none());
        assert!(parse_uuid("{0190a6b2-0000-7000-8000-00000000000}").is_none());
    }
}
