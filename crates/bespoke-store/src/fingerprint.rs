//! A stable digest of an event's payload, to tell a replay from a conflicting reuse of its id.

use sha2::{Digest, Sha256};

use crate::NewEvent;

/// The first 8 bytes of SHA-256 over a length-prefixed encoding of the payload *as the client
/// sent it* (a missing timestamp stays missing, so that a replay without one still matches).
/// 64 bits make a conflicting reuse of an id pass as a replay with probability 2^-64; the row is
/// smaller, which counts at hundreds of thousands of events per second.
pub(crate) fn fingerprint(e: &NewEvent) -> [u8; 8] {
    let mut h = Sha256::new();
    let mut field = |bytes: &[u8]| {
        h.update((bytes.len() as u64).to_le_bytes());
        h.update(bytes);
    };
    field(e.user.as_bytes());
    field(e.item.as_bytes());
    field(e.kind.as_bytes());
    match e.value {
        Some(v) => field(&v.to_bits().to_le_bytes()),
        None => field(b""),
    }
    match e.timestamp {
        Some(t) => field(&t.to_le_bytes()),
        None => field(b""),
    }
    // serde_json's `Map` is a BTreeMap here, so serialisation is canonical (sorted keys).
    match &e.context {
        Some(c) => field(
            serde_json::to_string(c)
                .expect("a JSON map serialises")
                .as_bytes(),
        ),
        None => field(b""),
    }
    let digest = h.finalize();
    digest[..8].try_into().expect("SHA-256 has 32 bytes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn differs_on_every_field_and_not_on_key_order() {
        let base = NewEvent::new("u", "i", "view");
        let f = fingerprint(&base);
        let variants = [
            NewEvent {
                user: "u2".into(),
                ..base.clone()
            },
            NewEvent {
                item: "i2".into(),
                ..base.clone()
            },
            NewEvent {
                kind: "click".into(),
                ..base.clone()
            },
            NewEvent {
                value: Some(1.0),
                ..base.clone()
            },
            NewEvent {
                timestamp: Some(0),
                ..base.clone()
            },
            NewEvent {
                context: Some(serde_json::Map::new()),
                ..base.clone()
            },
            // Length prefixes keep field boundaries: "ui"+"" differs from "u"+"i".
            NewEvent {
                user: "ui".into(),
                item: "".into(),
                ..base.clone()
            },
        ];
        for v in &variants {
            assert_ne!(fingerprint(v), f, "{v:?}");
        }
        let a: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(r#"{"a":1,"b":2}"#).unwrap();
        let b: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(r#"{"b":2,"a":1}"#).unwrap();
        let ea = NewEvent {
            context: Some(a),
            ..base.clone()
        };
        let eb = NewEvent {
            context: Some(b),
            ..base
        };
        assert_eq!(fingerprint(&ea), fingerprint(&eb));
    }
}
