//! Secure aggregation: masking one update against its neighbours, and a whole simulated round
//! (every client's masking on this machine's cores, then the server's sum and recovery).
//! Run with `cargo bench -p bespoke-client --bench secagg`.

use std::collections::BTreeMap;

use bespoke_client::secagg::{
    self, Aggregator, ClientId, ClientKeys, DEFAULT_SCALE_BITS, Graph, RevealedSeed,
};
use divan::{Bencher, black_box};

fn main() {
    divan::main();
}

fn keys(id: ClientId) -> ClientKeys {
    let mut secret = [0x5a; 32];
    secret[..8].copy_from_slice(&id.to_le_bytes());
    ClientKeys::from_secret(secret)
}

fn update(id: ClientId, d: usize) -> Vec<u64> {
    let values: Vec<f32> = (0..d)
        .map(|j| ((j as u64 * 7919 + id) % 211) as f32 / 2110.0 - 0.05)
        .collect();
    secagg::encode(&values, DEFAULT_SCALE_BITS).unwrap()
}

/// One client: d = 60,000 words against 16 neighbours (16 X25519 agreements, 7.7 MB of
/// ChaCha20 keystream).
#[divan::bench(args = [60_000])]
fn mask_k16(bencher: Bencher, d: usize) {
    let mine = keys(0);
    let neighbours: Vec<(ClientId, [u8; 32])> =
        (1..=16).map(|id| (id, keys(id).public())).collect();
    let update = update(0, d);
    bencher.bench_local(|| black_box(secagg::mask(&update, 1, 0, &mine, &neighbours).unwrap()));
}

const CLIENTS: u64 = 500;
const DIM: usize = 60_000;
const K: usize = 16;

/// A whole round of 500 clients, d = 60,000, k = 16, with `dropped` clients that mask but
/// never submit: all the masking (split over the available cores), the server's sum, the
/// survivors' reveals and the recovery.
#[divan::bench(args = [0, 25], sample_count = 3, sample_size = 1)]
fn round_500_clients_d60000_k16(bencher: Bencher, dropped: u64) {
    let ids: Vec<ClientId> = (0..CLIENTS).collect();
    let graph = secagg::neighbours(9, &ids, K).unwrap();
    let keys: BTreeMap<ClientId, ClientKeys> = ids.iter().map(|&id| (id, keys(id))).collect();
    let updates: BTreeMap<ClientId, Vec<u64>> =
        ids.iter().map(|&id| (id, update(id, DIM))).collect();
    let keyed = |id: ClientId| -> Vec<(ClientId, [u8; 32])> {
        graph
            .neighbours_of(id)
            .unwrap()
            .iter()
            .map(|&n| (n, keys[&n].public()))
            .collect()
    };
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    bencher.bench_local(|| {
        let masked: Vec<(ClientId, Vec<u64>)> = std::thread::scope(|s| {
            let handles: Vec<_> = ids
                .chunks(ids.len().div_ceil(threads))
                .map(|chunk| {
                    s.spawn(|| {
                        chunk
                            .iter()
                            .map(|&id| {
                                let m = secagg::mask(&updates[&id], 1, id, &keys[&id], &keyed(id));
                                (id, m.unwrap())
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().unwrap())
                .collect()
        });
        let mut agg = Aggregator::new(1, DIM, graph.clone());
        // Every 20th client drops out after masking.
        let gone = |id: ClientId| id.is_multiple_of(20) && id / 20 < dropped;
        for (id, m) in &masked {
            if !gone(*id) {
                agg.add(*id, m).unwrap();
            }
        }
        let reveals = reveal_all(&mut agg, &graph, &keys, &keyed);
        black_box(agg.finish(reveals).unwrap())
    });
}

fn reveal_all(
    agg: &mut Aggregator,
    graph: &Graph,
    keys: &BTreeMap<ClientId, ClientKeys>,
    keyed: &dyn Fn(ClientId) -> Vec<(ClientId, [u8; 32])>,
) -> Vec<RevealedSeed> {
    let mut reveals = Vec::new();
    if agg.dropped().is_empty() {
        return reveals;
    }
    for id in agg.submitted() {
        if graph
            .neighbours_of(id)
            .unwrap()
            .iter()
            .any(|n| agg.dropped().contains(n))
        {
            let request = agg.reveal_request(id).unwrap();
            reveals.extend(secagg::reveal(1, id, &keys[&id], &keyed(id), &request).unwrap());
        }
    }
    reveals
}
