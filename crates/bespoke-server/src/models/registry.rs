//! Every model family, one line each: the only place that names them all.

use bespoke_algo::ModelKind;

use super::model::ModelFamily;

/// Every model family, one line each: training fits them in this order and loading reads
/// them back.
pub static REGISTRY: &[&dyn ModelFamily] = &[
    &super::als::Family,
    &super::knn::Family,
    &super::ease::Family,
    &super::bpr::Family,
];

/// The family of `kind` (of its family for the kNN variants).
pub fn family(kind: ModelKind) -> Option<&'static dyn ModelFamily> {
    REGISTRY.iter().copied().find(|f| f.kind() == kind.family())
}
