//! Model files in the safetensors format (readable with `safetensors.numpy.load_file`):
//!
//! - `als.safetensors`: `user_factors` (`F32`, users × f) and `item_factors` (`F32`, items × f);
//! - `knn.safetensors`: the item × item neighbour matrix in CSR form, `indptr` (`U64`, items + 1),
//!   `indices` (`U32`) and `data` (`F32`);
//! - `users.json`, `items.json`: the external key of each row, in row order;
//! - `meta.json` (written by the store): hyperparameters, data watermark, timings, metrics.
//!
//! Each safetensors header's `__metadata__` repeats the essentials (`format`, parameters) so that
//! a file is self-describing on its own, and declares under [`USER_ROWS`] which of its tensors
//! have one row per entry of `users.json`. Erasure zeroes exactly those rows
//! ([`zero_user_rows`]), and [`check_user_rows`] refuses to save a file that does not declare
//! them, so a model cannot be added without its user rows being covered.

use std::collections::HashMap;

use bespoke_algo::{Als, AlsParams, Bpr, Csr, Ease, Factors, ItemKnn, Similarity};
use safetensors::tensor::{Dtype, SafeTensors, TensorView};

/// File names inside a model version.
pub const ALS_FILE: &str = "als.safetensors";
/// See [`ALS_FILE`].
pub const KNN_FILE: &str = "knn.safetensors";
/// See [`ALS_FILE`]; present only when EASE was trained (small enough catalogs).
pub const EASE_FILE: &str = "ease.safetensors";
/// See [`ALS_FILE`]; present only when BPR was trained (`training.bpr`).
pub const BPR_FILE: &str = "bpr.safetensors";
/// See [`ALS_FILE`].
pub const USERS_FILE: &str = "users.json";
/// See [`ALS_FILE`].
pub const ITEMS_FILE: &str = "items.json";

/// Metadata key of a safetensors file listing (comma-separated) the tensors whose rows are
/// users, in `users.json` order; empty when the file holds nothing per user.
pub const USER_ROWS: &str = "user_rows";

/// A model file that cannot be read back.
#[derive(Debug, thiserror::Error)]
#[error("model file {file}: {message}")]
pub struct ArtifactError {
    /// The file.
    pub file: String,
    /// What is wrong.
    pub message: String,
}

fn err(file: &str, message: impl std::fmt::Display) -> ArtifactError {
    ArtifactError {
        file: file.to_owned(),
        message: message.to_string(),
    }
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn u32_bytes(v: &[u32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn u64_bytes(v: &[u64]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn tensor<'a>(
    st: &SafeTensors<'a>,
    file: &'static str,
    name: &str,
    dtype: Dtype,
) -> Result<(Vec<usize>, &'a [u8]), ArtifactError> {
    let t = st
        .tensor(name)
        .map_err(|e| err(file, format!("tensor {name}: {e}")))?;
    if t.dtype() != dtype {
        return Err(err(
            file,
            format!(
                "tensor {name} has dtype {:?}, expected {dtype:?}",
                t.dtype()
            ),
        ));
    }
    Ok((t.shape().to_vec(), t.data()))
}

fn read_f32(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
        .collect()
}

fn read_u32(b: &[u8]) -> Vec<u32> {
    b.chunks_exact(4)
        .map(|c| u32::from_le_bytes(c.try_into().expect("4 bytes")))
        .collect()
}

fn read_u64(b: &[u8]) -> Vec<u64> {
    b.chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
        .collect()
}

fn metadata(bytes: &[u8], file: &str) -> Result<HashMap<String, String>, ArtifactError> {
    let (_, meta) = SafeTensors::read_metadata(bytes).map_err(|e| err(file, e))?;
    Ok(meta.metadata().clone().unwrap_or_default())
}

/// Encodes `F32` tensors `(name, shape, values)` as a safetensors file of `format`, declaring
/// `user_rows` (the tensors with one row per user, in `users.json` order) and any further
/// metadata: the building block of a new model's file.
pub fn encode_f32(
    format: &str,
    user_rows: &[&str],
    tensors: &[(&str, Vec<usize>, &[f32])],
    info: &[(&str, String)],
) -> Vec<u8> {
    let bytes: Vec<Vec<u8>> = tensors.iter().map(|t| f32_bytes(t.2)).collect();
    let views = (tensors.iter().zip(&bytes)).map(|(t, b)| (t.0, f32_view(t.1.clone(), b)));
    let mut meta = HashMap::from([
        ("format".to_owned(), format.to_owned()),
        (USER_ROWS.to_owned(), user_rows.join(",")),
    ]);
    meta.extend(info.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
    safetensors::serialize(views, &Some(meta)).expect("valid tensors serialise")
}

/// The `F32` tensor `name` of `file`, written by [`encode_f32`] with `format`: its shape and
/// values.
pub fn decode_f32(
    bytes: &[u8],
    file: &'static str,
    format: &str,
    name: &str,
) -> Result<(Vec<usize>, Vec<f32>), ArtifactError> {
    if metadata(bytes, file)?.get("format").map(String::as_str) != Some(format) {
        return Err(err(file, format!("not a {format} file")));
    }
    let st = SafeTensors::deserialize(bytes).map_err(|e| err(file, e))?;
    let (shape, data) = tensor(&st, file, name, Dtype::F32)?;
    Ok((shape, read_f32(data)))
}

/// Encodes an iALS model.
pub fn encode_als(model: &Als) -> Vec<u8> {
    let p = model.params();
    let (u, i) = (model.user_factors(), model.item_factors());
    let (ub, ib) = (f32_bytes(u.as_slice()), f32_bytes(i.as_slice()));
    let tensors = [
        ("item_factors", f32_view(vec![i.rows(), i.dim()], &ib)),
        ("user_factors", f32_view(vec![u.rows(), u.dim()], &ub)),
    ];
    let info = HashMap::from([
        ("format".to_owned(), "bespoke.als.v1".to_owned()),
        (USER_ROWS.to_owned(), "user_factors".to_owned()),
        ("factors".to_owned(), p.factors.to_string()),
        ("iterations".to_owned(), p.iterations.to_string()),
        ("regularization".to_owned(), p.regularization.to_string()),
        ("alpha".to_owned(), p.alpha.to_string()),
        ("cg_steps".to_owned(), p.cg_steps.to_string()),
        ("seed".to_owned(), p.seed.to_string()),
    ]);
    safetensors::serialize(tensors, &Some(info)).expect("valid tensors serialise")
}

/// Decodes an iALS model written by [`encode_als`].
pub fn decode_als(bytes: &[u8]) -> Result<Als, ArtifactError> {
    const F: &str = ALS_FILE;
    let meta = metadata(bytes, F)?;
    if meta.get("format").map(String::as_str) != Some("bespoke.als.v1") {
        return Err(err(F, "not a bespoke.als.v1 file"));
    }
    let num = |k: &str| -> Result<f64, ArtifactError> {
        meta.get(k)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| err(F, format!("metadata {k} missing or not a number")))
    };
    let params = AlsParams {
        factors: num("factors")? as usize,
        iterations: num("iterations")? as usize,
        regularization: num("regularization")? as f32,
        alpha: num("alpha")? as f32,
        cg_steps: num("cg_steps")? as usize,
        seed: meta.get("seed").and_then(|v| v.parse().ok()).unwrap_or(0),
        compute_loss: false,
    };
    let st = SafeTensors::deserialize(bytes).map_err(|e| err(F, e))?;
    let (users, items) = (
        read_factors(&st, F, "user_factors")?,
        read_factors(&st, F, "item_factors")?,
    );
    Als::from_parts(params, users, items)
        .ok_or_else(|| err(F, "factor dimensions disagree with the metadata"))
}

/// A view of `bytes` (from [`f32_bytes`]) as an `F32` tensor of `shape`.
fn f32_view(shape: Vec<usize>, bytes: &[u8]) -> TensorView<'_> {
    TensorView::new(Dtype::F32, shape, bytes).expect("the bytes of that many f32 values")
}

/// The `F32` matrix `name` of file `file` as factors (rows × dimension).
fn read_factors(
    st: &SafeTensors,
    file: &'static str,
    name: &str,
) -> Result<Factors, ArtifactError> {
    let (shape, data) = tensor(st, file, name, Dtype::F32)?;
    let [rows, dim] = shape[..] else {
        return Err(err(file, format!("tensor {name} is not two-dimensional")));
    };
    Factors::from_vec(rows, dim, read_f32(data))
        .ok_or_else(|| err(file, format!("tensor {name}: size mismatch")))
}

/// Encodes an EASE model: its dense weights as one `items × items` tensor.
pub fn encode_ease(model: &Ease, lambda: f64) -> Vec<u8> {
    let n = model.n_items();
    let wb = f32_bytes(model.weights());
    let tensors = [("weights", f32_view(vec![n, n], &wb))];
    let info = HashMap::from([
        ("format".to_owned(), "bespoke.ease.v1".to_owned()),
        (USER_ROWS.to_owned(), String::new()),
        ("lambda".to_owned(), lambda.to_string()),
        ("items".to_owned(), n.to_string()),
    ]);
    safetensors::serialize(tensors, &Some(info)).expect("valid tensors serialise")
}

/// Decodes an EASE model written by [`encode_ease`], with its λ.
pub fn decode_ease(bytes: &[u8]) -> Result<(Ease, f64), ArtifactError> {
    const F: &str = EASE_FILE;
    let meta = metadata(bytes, F)?;
    if meta.get("format").map(String::as_str) != Some("bespoke.ease.v1") {
        return Err(err(F, "not a bespoke.ease.v1 file"));
    }
    let n: usize = meta
        .get("items")
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| err(F, "metadata items missing"))?;
    let st = SafeTensors::deserialize(bytes).map_err(|e| err(F, e))?;
    let weights = read_f32(tensor(&st, F, "weights", Dtype::F32)?.1);
    // Files always carry it; its absence would only make a re-encoded file say NaN.
    let lambda = meta
        .get("lambda")
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN);
    Ease::from_parts(n, weights)
        .map(|e| (e, lambda))
        .ok_or_else(|| err(F, "weights are not items × items"))
}

/// Encodes a BPR model: `user_factors`, `item_factors` (`F32`, rows × f) and `item_bias`.
pub fn encode_bpr(model: &Bpr) -> Vec<u8> {
    let (u, i) = (model.user_factors(), model.item_factors());
    let (ub, ib, bb) = (
        f32_bytes(u.as_slice()),
        f32_bytes(i.as_slice()),
        f32_bytes(model.item_bias()),
    );
    let tensors = [
        ("item_bias", f32_view(vec![i.rows()], &bb)),
        ("item_factors", f32_view(vec![i.rows(), i.dim()], &ib)),
        ("user_factors", f32_view(vec![u.rows(), u.dim()], &ub)),
    ];
    let info = HashMap::from([
        ("format".to_owned(), "bespoke.bpr.v1".to_owned()),
        (USER_ROWS.to_owned(), "user_factors".to_owned()),
    ]);
    safetensors::serialize(tensors, &Some(info)).expect("valid tensors serialise")
}

/// Decodes a BPR model written by [`encode_bpr`].
pub fn decode_bpr(bytes: &[u8]) -> Result<Bpr, ArtifactError> {
    const F: &str = BPR_FILE;
    let meta = metadata(bytes, F)?;
    if meta.get("format").map(String::as_str) != Some("bespoke.bpr.v1") {
        return Err(err(F, "not a bespoke.bpr.v1 file"));
    }
    let st = SafeTensors::deserialize(bytes).map_err(|e| err(F, e))?;
    let bias = read_f32(tensor(&st, F, "item_bias", Dtype::F32)?.1);
    Bpr::from_parts(
        read_factors(&st, F, "user_factors")?,
        read_factors(&st, F, "item_factors")?,
        bias,
    )
    .ok_or_else(|| err(F, "factor and bias shapes disagree"))
}

/// Encodes an item-kNN model.
pub fn encode_knn(model: &ItemKnn) -> Vec<u8> {
    let m = model.neighbours();
    let mut indptr = Vec::with_capacity(m.n_rows() + 1);
    let mut indices = Vec::with_capacity(m.nnz());
    let mut data = Vec::with_capacity(m.nnz());
    indptr.push(0u64);
    for r in 0..m.n_rows() {
        let (c, v) = m.row(r);
        indices.extend_from_slice(c);
        data.extend_from_slice(v);
        indptr.push(indices.len() as u64);
    }
    let (pb, ib, db) = (u64_bytes(&indptr), u32_bytes(&indices), f32_bytes(&data));
    let tensors = [
        ("data", f32_view(vec![data.len()], &db)),
        (
            "indices",
            TensorView::new(Dtype::U32, vec![indices.len()], &ib).expect("sizes match"),
        ),
        (
            "indptr",
            TensorView::new(Dtype::U64, vec![indptr.len()], &pb).expect("sizes match"),
        ),
    ];
    let (similarity, k1, b) = match model.similarity() {
        Similarity::Cosine => ("cosine", 0.0, 0.0),
        Similarity::Bm25 { k1, b } => ("bm25", k1, b),
        // The two parameters travel in the same slots, named by the similarity.
        Similarity::Rp3Beta { alpha, beta } => ("rp3beta", alpha, beta),
    };
    let info = HashMap::from([
        ("format".to_owned(), "bespoke.knn.v1".to_owned()),
        (USER_ROWS.to_owned(), String::new()),
        ("similarity".to_owned(), similarity.to_owned()),
        ("k".to_owned(), model.k().to_string()),
        ("k1".to_owned(), k1.to_string()),
        ("b".to_owned(), b.to_string()),
        ("items".to_owned(), m.n_rows().to_string()),
    ]);
    safetensors::serialize(tensors, &Some(info)).expect("valid tensors serialise")
}

/// Decodes an item-kNN model written by [`encode_knn`].
pub fn decode_knn(bytes: &[u8]) -> Result<ItemKnn, ArtifactError> {
    const F: &str = KNN_FILE;
    let meta = metadata(bytes, F)?;
    if meta.get("format").map(String::as_str) != Some("bespoke.knn.v1") {
        return Err(err(F, "not a bespoke.knn.v1 file"));
    }
    let get = |k: &str| {
        meta.get(k)
            .cloned()
            .ok_or_else(|| err(F, format!("metadata {k} missing")))
    };
    let num = |k: &str| -> Result<f64, ArtifactError> {
        get(k)?
            .parse()
            .map_err(|_| err(F, format!("metadata {k} is not a number")))
    };
    let similarity = match get("similarity")?.as_str() {
        "cosine" => Similarity::Cosine,
        "bm25" => Similarity::Bm25 {
            k1: num("k1")? as f32,
            b: num("b")? as f32,
        },
        "rp3beta" => Similarity::Rp3Beta {
            alpha: num("k1")? as f32,
            beta: num("b")? as f32,
        },
        other => return Err(err(F, format!("unknown similarity {other:?}"))),
    };
    let n = num("items")? as usize;
    let st = SafeTensors::deserialize(bytes).map_err(|e| err(F, e))?;
    let indptr = read_u64(tensor(&st, F, "indptr", Dtype::U64)?.1);
    let indices = read_u32(tensor(&st, F, "indices", Dtype::U32)?.1);
    let data = read_f32(tensor(&st, F, "data", Dtype::F32)?.1);
    if indptr.len() != n + 1
        || indices.len() != data.len()
        || indptr.last().copied() != Some(indices.len() as u64)
    {
        return Err(err(F, "inconsistent CSR arrays"));
    }
    let mut triples = Vec::with_capacity(indices.len());
    for r in 0..n {
        let (a, b) = (indptr[r] as usize, indptr[r + 1] as usize);
        if a > b || b > indices.len() {
            return Err(err(F, "inconsistent CSR arrays"));
        }
        for k in a..b {
            if indices[k] as usize >= n {
                return Err(err(F, "neighbour index out of range"));
            }
            triples.push((r as u32, indices[k], data[k]));
        }
    }
    Ok(ItemKnn::from_parts(
        similarity,
        num("k")? as usize,
        Csr::from_triples(n, n, &triples, false),
    ))
}

/// The tensors of a safetensors file `name` whose rows are users, as its metadata declares.
/// Versions written before files declared them fall back to what those formats held.
fn declared_user_rows(
    meta: &HashMap<String, String>,
    name: &str,
) -> Result<Vec<String>, ArtifactError> {
    let file = name;
    match meta.get(USER_ROWS) {
        Some(list) => Ok(list
            .split(',')
            .filter(|t| !t.is_empty())
            .map(str::to_owned)
            .collect()),
        None => match meta.get("format").map(String::as_str) {
            Some("bespoke.als.v1" | "bespoke.bpr.v1") => Ok(vec!["user_factors".to_owned()]),
            Some("bespoke.knn.v1" | "bespoke.ease.v1" | "bespoke.content.v1") => Ok(Vec::new()),
            _ => Err(err(file, format!("does not declare its {USER_ROWS}"))),
        },
    }
}

/// Checks, before a version is saved, that every file is a key list or a safetensors file that
/// declares its user rows, each declared tensor having exactly `users` rows.
pub fn check_user_rows(files: &[(&str, &[u8])], users: usize) -> Result<(), ArtifactError> {
    for (name, bytes) in files {
        if *name == USERS_FILE || *name == ITEMS_FILE {
            continue;
        }
        let file = name;
        if !name.ends_with(".safetensors") {
            return Err(err(
                file,
                format!("{name}: only safetensors files and key lists can be erased from"),
            ));
        }
        let meta = metadata(bytes, file)?;
        if !meta.contains_key(USER_ROWS) {
            return Err(err(
                file,
                format!("{name} does not declare its {USER_ROWS}"),
            ));
        }
        let st = SafeTensors::deserialize(bytes).map_err(|e| err(file, e))?;
        for t in declared_user_rows(&meta, name)? {
            let view = st
                .tensor(&t)
                .map_err(|e| err(file, format!("declared user tensor {t}: {e}")))?;
            if view.shape().first() != Some(&users) {
                return Err(err(
                    file,
                    format!(
                        "{name}: tensor {t} has shape {:?}, not one row per user ({users})",
                        view.shape()
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// Rewrites the safetensors file `name` with row `row` of every tensor it declares as user
/// rows set to zero, everything else (other tensors, metadata) unchanged; `None` when it
/// declares none (nothing to rewrite).
pub fn zero_user_rows(
    bytes: &[u8],
    name: &str,
    row: usize,
) -> Result<Option<Vec<u8>>, ArtifactError> {
    let file = name;
    let info = metadata(bytes, file)?;
    let declared = declared_user_rows(&info, name)?;
    if declared.is_empty() {
        return Ok(None);
    }
    let st = SafeTensors::deserialize(bytes).map_err(|e| err(file, e))?;
    let mut owned: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
    for (t, view) in st.tensors() {
        let mut data = view.data().to_vec();
        if declared.contains(&t) {
            let rows = view.shape().first().copied().unwrap_or(0);
            if row >= rows {
                return Err(err(file, format!("{t}: user row {row} out of {rows}")));
            }
            let width = data.len() / rows;
            data[row * width..(row + 1) * width].fill(0);
        }
        owned.push((t, view.dtype(), view.shape().to_vec(), data));
    }
    for t in &declared {
        if !owned.iter().any(|(n, ..)| n == t) {
            return Err(err(file, format!("declared user tensor {t} is missing")));
        }
    }
    let views = owned
        .iter()
        .map(|(n, dtype, shape, data)| {
            TensorView::new(*dtype, shape.clone(), data)
                .map(|v| (n.clone(), v))
                .map_err(|e| err(file, e))
        })
        .collect::<Result<Vec<_>, _>>()?;
    safetensors::serialize(views, &Some(info))
        .map(Some)
        .map_err(|e| err(file, e))
}

/// Encodes a list of keys (row order) as a JSON array.
pub fn encode_keys(keys: &[String]) -> Vec<u8> {
    serde_json::to_vec(keys).expect("strings serialise")
}

/// Decodes [`encode_keys`].
pub fn decode_keys(bytes: &[u8], file: &'static str) -> Result<Vec<String>, ArtifactError> {
    serde_json::from_slice(bytes).map_err(|e| err(file, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads a safetensors file by its published layout, independently of the `safetensors`
    /// crate: 8-byte little-endian header length, a JSON header, then the data buffer.
    fn raw_tensor(bytes: &[u8], name: &str) -> (String, Vec<usize>, Vec<u8>, serde_json::Value) {
        let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
        let t = &header[name];
        let dtype = t["dtype"].as_str().unwrap().to_owned();
        let shape = t["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as usize)
            .collect();
        let begin = t["data_offsets"][0].as_u64().unwrap() as usize;
        let end = t["data_offsets"][1].as_u64().unwrap() as usize;
        (
            dtype,
            shape,
            bytes[8 + n + begin..8 + n + end].to_vec(),
            header["__metadata__"].clone(),
        )
    }

    fn als() -> Als {
        let t: Vec<(u32, u32, f32)> = (0..60)
            .map(|k| (k % 7, (k * 3) % 11, 1.0 + (k % 3) as f32))
            .collect();
        let w = Csr::from_triples(7, 11, &t, false);
        Als::fit(
            &w,
            AlsParams {
                factors: 5,
                iterations: 3,
                ..AlsParams::default()
            },
            |_| {},
        )
    }

    #[test]
    fn als_round_trips_and_a_second_reader_agrees() {
        let model = als();
        let bytes = encode_als(&model);
        assert_eq!(decode_als(&bytes).unwrap(), model);
        let (dtype, shape, data, meta) = raw_tensor(&bytes, "item_factors");
        assert_eq!((dtype.as_str(), shape), ("F32", vec![11, 5]));
        assert_eq!(read_f32(&data), model.item_factors().as_slice());
        assert_eq!(meta["format"], "bespoke.als.v1");
        assert_eq!(meta["factors"], "5");
        let (_, shape, data, _) = raw_tensor(&bytes, "user_factors");
        assert_eq!(shape, vec![7, 5]);
        assert_eq!(read_f32(&data), model.user_factors().as_slice());
    }

    #[test]
    fn f32_files_round_trip_and_declare_their_user_rows() {
        let (u, i) = ([1.0f32, 2.0, 3.0, 4.0], [5.0f32, 6.0]);
        let bytes = encode_f32(
            "bespoke.test.v1",
            &["users"],
            &[("users", vec![2, 2], &u), ("items", vec![2], &i)],
            &[("lambda", "3".to_owned())],
        );
        let f = "test.safetensors";
        assert_eq!(
            decode_f32(&bytes, f, "bespoke.test.v1", "users").unwrap(),
            (vec![2, 2], u.to_vec())
        );
        assert!(decode_f32(&bytes, f, "bespoke.other.v1", "users").is_err());
        check_user_rows(&[(f, &bytes)], 2).unwrap();
        let zeroed = zero_user_rows(&bytes, f, 1).unwrap().unwrap();
        let (_, users) = decode_f32(&zeroed, f, "bespoke.test.v1", "users").unwrap();
        assert_eq!(users, [1.0, 2.0, 0.0, 0.0]);
        let (_, items) = decode_f32(&zeroed, f, "bespoke.test.v1", "items").unwrap();
        assert_eq!(items, i);
    }

    #[test]
    fn knn_round_trips_and_corruption_is_reported() {
        let t: Vec<(u32, u32, f32)> = (0..80).map(|k| (k % 9, (k * 5) % 13, 1.0)).collect();
        let w = Csr::from_triples(9, 13, &t, false);
        let knn = ItemKnn::fit(&w, Similarity::Bm25 { k1: 1.2, b: 0.75 }, 4);
        let bytes = encode_knn(&knn);
        assert_eq!(decode_knn(&bytes).unwrap(), knn);
        let (dtype, shape, _, _) = raw_tensor(&bytes, "indptr");
        assert_eq!((dtype.as_str(), shape), ("U64", vec![14]));
        assert!(decode_knn(&bytes[..bytes.len() - 3]).is_err());
        assert!(decode_als(&bytes).is_err(), "a kNN file is not an ALS file");
        assert!(decode_keys(b"[1,2]", USERS_FILE).is_err());
    }

    #[test]
    fn user_rows_are_declared_checked_and_zeroed() {
        let model = als();
        let bytes = encode_als(&model);
        let knn = encode_knn(&ItemKnn::fit(
            &Csr::from_triples(7, 11, &[(0, 1, 1.0), (1, 1, 1.0)], false),
            Similarity::Cosine,
            2,
        ));
        let files: [(&str, &[u8]); 2] = [(ALS_FILE, &bytes), (KNN_FILE, &knn)];
        check_user_rows(&files, 7).unwrap();
        // The declared tensor must have one row per user.
        assert!(check_user_rows(&files, 8).is_err());
        // A file that says nothing about its user rows cannot be saved.
        let bare = safetensors::serialize(
            [("w", f32_view(vec![1], &f32_bytes(&[1.0])))],
            &Some(HashMap::from([("format".to_owned(), "x".to_owned())])),
        )
        .unwrap();
        let e = check_user_rows(&[("new.safetensors", &bare)], 7).unwrap_err();
        assert!(e.to_string().contains(USER_ROWS), "{e}");
        assert!(check_user_rows(&[("notes.txt", b"hi")], 7).is_err());

        let scrubbed = decode_als(&zero_user_rows(&bytes, ALS_FILE, 3).unwrap().unwrap()).unwrap();
        assert!(scrubbed.user_factors().row(3).iter().all(|&x| x == 0.0));
        for r in (0..7).filter(|&r| r != 3) {
            assert_eq!(scrubbed.user_factors().row(r), model.user_factors().row(r));
        }
        assert_eq!(scrubbed.item_factors(), model.item_factors());
        assert!(zero_user_rows(&bytes, ALS_FILE, 7).is_err());
        // Nothing per user: nothing to rewrite.
        assert!(zero_user_rows(&knn, KNN_FILE, 0).unwrap().is_none());
    }
}
