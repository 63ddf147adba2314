//! Federated training rounds over HTTP (docs/federated-http.md): the server's side of
//! `bespoke_client::federated` and `bespoke_client::secagg`.
//!
//! One run at a time, held in memory behind a mutex in the [`Engine`]: a restart ends the
//! run (its factors and privacy accounting are lost; persistence is a later step). A new
//! `start` replaces the run in progress.
//!
//! A round goes through four phases: `join` (devices announce an id and an X25519 public
//! key), `submit` (the participants and the neighbour graph are fixed; devices send masked,
//! or with secure aggregation off plain, updates), `unmask` (the survivors reveal the seeds
//! they share with neighbours that dropped out) and then aggregation: the sum is decoded,
//! noised (when the run has a noise multiplier), and turned into a server step. The next
//! round starts in `join`, or the run is `done`.
//!
//! The items are the catalog's servable items when the run starts, in item-index order; the
//! item set is fixed for the run so that every round's layout is the same.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use bespoke_algo::dp::{RdpAccountant, noise_multiplier_for};
use bespoke_client::federated::{self, Layout, StepParams};
use bespoke_client::secagg::{self, Aggregator, ClientId, RevealRequest, RevealedSeed};
use bespoke_client::{BundleParts, Encoding, Header, Recency};
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};
use serde::Serialize;
use utoipa::ToSchema;

use super::Engine;

/// Fixed-point bits of the masked encoding (`secagg::DEFAULT_SCALE_BITS`).
pub const SCALE_BITS: u32 = secagg::DEFAULT_SCALE_BITS;

/// Why a federated request was refused; the HTTP layer maps `kind` to a status.
#[derive(Debug, Clone, PartialEq)]
pub struct FedError {
    /// The class of mistake.
    pub kind: FedErrorKind,
    /// Stable machine-readable code.
    pub code: &'static str,
    /// The request field at fault.
    pub field: &'static str,
    /// What went wrong.
    pub message: String,
}

/// Classes of [`FedError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FedErrorKind {
    /// A malformed or inconsistent value (400).
    Invalid,
    /// A request that does not fit the run's state: wrong round or phase, duplicate (409).
    Conflict,
    /// A client that is not a participant of the round (403).
    NotParticipant,
    /// No run has been started (404).
    NoRun,
    /// Our own failure (500).
    Internal,
}

impl FedError {
    fn new(
        kind: FedErrorKind,
        code: &'static str,
        field: &'static str,
        message: impl Into<String>,
    ) -> Self {
        Self {
            kind,
            code,
            field,
            message: message.into(),
        }
    }

    fn invalid(field: &'static str, message: impl Into<String>) -> Self {
        Self::new(FedErrorKind::Invalid, "invalid_field", field, message)
    }
}

type Result<T> = std::result::Result<T, FedError>;

/// A run's settings, with every default filled in.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = FederatedConfig)]
pub struct Config {
    /// Factor dimension.
    pub factors: usize,
    /// `λ`.
    pub regularization: f64,
    /// Confidence slope `α`.
    pub alpha: f64,
    /// L2 clip norm `C` of each update.
    pub clip: f64,
    /// The privacy budget ε at δ = 1/population, if any.
    pub epsilon: Option<f64>,
    /// The noise multiplier `σ` in use (0: no central noise).
    pub noise_multiplier: f64,
    /// Planned rounds: the run is done after them.
    pub rounds: u64,
    /// Users the model is for (`N`).
    pub population: usize,
    /// Fewest clients a round needs to move to submit, and fewest survivors it aggregates.
    pub min_clients: usize,
    /// Expected clients per round, to choose `σ` from the budget.
    pub expected_clients: usize,
    /// Neighbour degree `k`; `None`: `secagg::default_degree` of the round's participants.
    pub neighbours: Option<usize>,
    /// Masked updates (true) or plain `f32` updates (false, for tests and trusted setups).
    pub secure_aggregation: bool,
    /// Damping in units of the noise's std (0 without noise).
    pub damping: f64,
    /// Seed of the initial factors.
    pub seed: u64,
}

/// A round's phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Devices join with an id and a public key.
    Join,
    /// Participants are fixed; devices send updates.
    Submit,
    /// Survivors reveal the seeds shared with dropped neighbours.
    Unmask,
    /// The run is over.
    Done,
}

/// A finished (or abandoned) round.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RoundRecord {
    /// The round.
    pub round: u64,
    /// Clients whose updates are in the step (0: abandoned).
    pub clients: usize,
    /// Participants that never submitted.
    pub dropped: usize,
    /// ε spent after this round (null without noise: unbounded).
    pub epsilon: Option<f64>,
    /// Seconds from the round's start to its step.
    pub seconds: f64,
}

/// One participant as `GET /v1/federated/round` lists it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ParticipantOut {
    /// Its id.
    pub id: u64,
    /// Its X25519 public key, 64 hex digits.
    pub public_key: String,
}

/// A survivor's pending reveal request.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RevealOut {
    /// The survivor asked.
    pub client_id: u64,
    /// The round.
    pub round: u64,
    /// The clients whose vectors the server holds among the survivor's neighbours (and itself).
    pub submitted: Vec<u64>,
    /// The survivor's neighbours that dropped out: the seeds asked for.
    pub dropped: Vec<u64>,
}

/// The state of the current round, as devices see it.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = FederatedRound)]
pub struct RoundView {
    /// The round number, from 1.
    pub round: u64,
    /// Its phase.
    pub phase: Phase,
    /// Items in the model.
    pub items: usize,
    /// Factor dimension.
    pub dim: usize,
    /// Length of an update vector (`Layout::len`).
    pub update_len: usize,
    /// `λ`, for the device's `gram_reg`.
    pub regularization: f64,
    /// `α`, for the device's fold-in.
    pub alpha: f64,
    /// Clip norm `C`.
    pub clip: f64,
    /// Whether updates are masked.
    pub secure_aggregation: bool,
    /// Fixed-point fractional bits of the masked encoding.
    pub scale_bits: u32,
    /// The public round seed of the neighbour graph (from submit on).
    pub round_seed: Option<u64>,
    /// Neighbour degree `k` (from submit on).
    pub neighbours: Option<usize>,
    /// The round's participants (from submit on).
    pub participants: Vec<ParticipantOut>,
    /// Participants that never submitted (from unmask on).
    pub dropped: Vec<u64>,
    /// Pending reveal requests (during unmask).
    pub reveal_requests: Vec<RevealOut>,
    /// ε spent so far (null without noise).
    pub epsilon_spent: Option<f64>,
    /// The budget ε, if any.
    pub budget: Option<f64>,
}

/// `GET /v1/federated/status`.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = FederatedStatus)]
pub struct StatusView {
    /// The run's settings.
    pub config: Config,
    /// The current round.
    pub round: u64,
    /// Its phase.
    pub phase: Phase,
    /// Clients joined to the current round.
    pub joined: usize,
    /// Updates received in the current round.
    pub submitted: usize,
    /// Every finished round, oldest first.
    pub history: Vec<RoundRecord>,
}

/// An update as it arrives.
#[derive(Debug)]
pub enum Update {
    /// Fixed-point words, masked.
    Masked(Vec<u64>),
    /// Plain values (secure aggregation off), already checked finite.
    Plain(Vec<f32>),
}

/// The federated run, if any.
#[derive(Debug, Default)]
pub(crate) struct Federated {
    run: parking_lot::Mutex<Option<Run>>,
}

#[derive(Debug)]
struct Run {
    config: Config,
    keys: Vec<String>,
    layout: Layout,
    factors: Vec<f32>,
    round: u64,
    phase: Phase,
    participants: BTreeMap<ClientId, [u8; 32]>,
    round_seed: Option<u64>,
    degree: Option<usize>,
    aggregator: Option<Aggregator>,
    plain_sum: Vec<f64>,
    submitted: BTreeSet<ClientId>,
    dropped: Vec<ClientId>,
    requests: BTreeMap<ClientId, RevealRequest>,
    seeds: Vec<RevealedSeed>,
    accountant: RdpAccountant,
    delta: f64,
    history: Vec<RoundRecord>,
    started: Instant,
    /// Draws the round seeds and the noise: ChaCha20 keyed from the OS.
    rng: ChaCha20Rng,
}

/// `POST /v1/federated/start`'s settings, `None` for the defaults.
#[derive(Debug, Clone, Default)]
pub struct StartParams {
    /// See [`Config`]; default 32.
    pub factors: Option<usize>,
    /// Default 10.
    pub regularization: Option<f64>,
    /// Default 1.
    pub alpha: Option<f64>,
    /// Default 5.
    pub clip: Option<f64>,
    /// No default.
    pub epsilon: Option<f64>,
    /// No default.
    pub noise_multiplier: Option<f64>,
    /// Default 10.
    pub rounds: Option<u64>,
    /// Default: users in the store.
    pub population: Option<usize>,
    /// Default 3.
    pub min_clients: Option<usize>,
    /// Default: `min_clients`.
    pub expected_clients: Option<usize>,
    /// Default: `secagg::default_degree`.
    pub neighbours: Option<usize>,
    /// Default true.
    pub secure_aggregation: Option<bool>,
    /// Default 10.
    pub damping: Option<f64>,
    /// Default 0.
    pub seed: Option<u64>,
}

fn positive(field: &'static str, v: f64) -> Result<f64> {
    if v.is_finite() && v > 0.0 {
        Ok(v)
    } else {
        Err(FedError::invalid(
            field,
            format!("{field} must be a positive number, got {v}"),
        ))
    }
}

fn non_negative(field: &'static str, v: f64) -> Result<f64> {
    if v.is_finite() && v >= 0.0 {
        Ok(v)
    } else {
        Err(FedError::invalid(
            field,
            format!("{field} must be finite and at least 0, got {v}"),
        ))
    }
}

fn os_rng() -> Result<ChaCha20Rng> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| {
        FedError::new(
            FedErrorKind::Internal,
            "internal",
            "",
            format!("no randomness: {e}"),
        )
    })?;
    Ok(ChaCha20Rng::from_seed(seed))
}

/// A standard normal draw from a CSPRNG (Box–Muller on 53-bit uniforms).
fn normal(rng: &mut ChaCha20Rng) -> f64 {
    let u = |rng: &mut ChaCha20Rng| ((rng.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
    let (a, b) = (u(rng), u(rng));
    (-2.0 * a.ln()).sqrt() * (std::f64::consts::TAU * b).cos()
}

fn hex(bytes: &[u8; 32]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Run {
    fn check_round(&self, round: u64, phase: Phase) -> Result<()> {
        if round != self.round {
            return Err(FedError::new(
                FedErrorKind::Conflict,
                "wrong_round",
                "round",
                format!("round {round} is not the current round {}", self.round),
            ));
        }
        if self.phase != phase {
            return Err(self.wrong_phase(phase));
        }
        Ok(())
    }

    fn wrong_phase(&self, wanted: Phase) -> FedError {
        FedError::new(
            FedErrorKind::Conflict,
            "wrong_phase",
            "phase",
            format!(
                "round {} is in phase {:?}, this needs {:?}",
                self.round, self.phase, wanted
            ),
        )
    }

    fn participant(&self, id: ClientId) -> Result<()> {
        if self.participants.contains_key(&id) {
            Ok(())
        } else {
            Err(FedError::new(
                FedErrorKind::NotParticipant,
                "unknown_client",
                "client_id",
                format!("client {id} is not a participant of round {}", self.round),
            ))
        }
    }

    fn sigma_std(&self) -> f64 {
        self.config.noise_multiplier * federated::sensitivity(self.config.clip)
    }

    fn view(&self) -> RoundView {
        let fixed = self.phase != Phase::Join;
        RoundView {
            round: self.round,
            phase: self.phase,
            items: self.layout.items,
            dim: self.layout.dim,
            update_len: self.layout.len(),
            regularization: self.config.regularization,
            alpha: self.config.alpha,
            clip: self.config.clip,
            secure_aggregation: self.config.secure_aggregation,
            scale_bits: SCALE_BITS,
            round_seed: self.round_seed,
            neighbours: self.degree,
            participants: if fixed {
                self.participants
                    .iter()
                    .map(|(id, k)| ParticipantOut {
                        id: *id,
                        public_key: hex(k),
                    })
                    .collect()
            } else {
                Vec::new()
            },
            dropped: self.dropped.clone(),
            reveal_requests: self
                .requests
                .iter()
                .map(|(id, r)| RevealOut {
                    client_id: *id,
                    round: r.round,
                    submitted: r.submitted.clone(),
                    dropped: r.dropped.clone(),
                })
                .collect(),
            epsilon_spent: self.epsilon_spent(),
            budget: self.config.epsilon,
        }
    }

    fn epsilon_spent(&self) -> Option<f64> {
        (self.config.noise_multiplier > 0.0).then(|| self.accountant.epsilon(self.delta).0)
    }

    /// Ends the round: `clients` updates summed in `sum` (none: abandoned), and opens the
    /// next round or ends the run.
    fn end_round(&mut self, sum: Option<Vec<f64>>) {
        let clients = self.submitted.len();
        let stepped = sum.is_some();
        let population = self.config.population as f64;
        if let Some(mut sum) = sum {
            let std = self.sigma_std();
            if std > 0.0 {
                for v in &mut sum {
                    *v += std * normal(&mut self.rng);
                }
            }
            federated::server_step(
                self.layout,
                &mut self.factors,
                &sum,
                StepParams {
                    regularization: self.config.regularization,
                    population,
                    clients: clients as f64,
                    curvature: 1.0,
                    learning_rate: 1.0,
                    damping: self.config.damping * std * population / clients as f64,
                    min_curvature: 3.0 * std,
                },
            );
            if self.config.noise_multiplier > 0.0 {
                let q = (clients as f64 / population).min(1.0);
                self.accountant
                    .compose_subsampled_gaussian(q, self.config.noise_multiplier, 1);
            }
        }
        let record = RoundRecord {
            round: self.round,
            clients: if stepped { clients } else { 0 },
            dropped: self.participants.len().saturating_sub(clients),
            epsilon: self.epsilon_spent(),
            seconds: self.started.elapsed().as_secs_f64(),
        };
        tracing::info!(
            round = record.round,
            clients = record.clients,
            dropped = record.dropped,
            "federated round ended"
        );
        self.history.push(record);
        self.round += 1;
        self.phase = if self.over_budget() {
            Phase::Done
        } else {
            Phase::Join
        };
        self.participants.clear();
        self.round_seed = None;
        self.degree = None;
        self.aggregator = None;
        self.plain_sum = Vec::new();
        self.submitted.clear();
        self.dropped.clear();
        self.requests.clear();
        self.seeds.clear();
        self.started = Instant::now();
    }

    /// Whether the next round would pass the planned rounds or the budget.
    fn over_budget(&self) -> bool {
        if self.round > self.config.rounds {
            return true;
        }
        let (Some(budget), true) = (self.config.epsilon, self.config.noise_multiplier > 0.0) else {
            return false;
        };
        let mut next = self.accountant.clone();
        let q = (self.config.expected_clients as f64 / self.config.population as f64).min(1.0);
        next.compose_subsampled_gaussian(q, self.config.noise_multiplier, 1);
        next.epsilon(self.delta).0 > budget
    }

    /// Aggregates when nothing more is awaited: every participant submitted, or every
    /// pending reveal arrived.
    fn maybe_finish(&mut self) -> Result<()> {
        let all_in = self.phase == Phase::Submit && self.submitted.len() == self.participants.len();
        let revealed = self.phase == Phase::Unmask && self.requests.is_empty();
        if !(all_in || revealed) {
            return Ok(());
        }
        let sum = if self.config.secure_aggregation {
            let agg = self
                .aggregator
                .take()
                .expect("a secure round in submit or unmask has its aggregator");
            match agg.finish(std::mem::take(&mut self.seeds)) {
                Ok(words) => secagg::decode_sum(&words, SCALE_BITS),
                Err(e) => {
                    // Seeds are checked as they arrive, so this is a bug; the round is lost
                    // but the run goes on.
                    tracing::error!(error = %e, round = self.round, "federated aggregation failed");
                    self.end_round(None);
                    return Err(FedError::new(
                        FedErrorKind::Internal,
                        "internal",
                        "",
                        "the round could not be aggregated and was abandoned",
                    ));
                }
            }
        } else {
            std::mem::take(&mut self.plain_sum)
        };
        self.end_round(Some(sum));
        Ok(())
    }
}

impl Engine {
    /// Starts a federated run over the catalog's servable items, replacing any run in progress.
    pub fn federated_start(&self, p: StartParams) -> Result<StatusView> {
        let factors = p.factors.unwrap_or(32);
        if !(1..=256).contains(&factors) {
            return Err(FedError::invalid(
                "factors",
                format!("factors must be in 1..=256, got {factors}"),
            ));
        }
        let regularization = positive("regularization", p.regularization.unwrap_or(10.0))?;
        let alpha = non_negative("alpha", p.alpha.unwrap_or(1.0))?;
        let clip = positive("clip", p.clip.unwrap_or(5.0))?;
        let epsilon = p.epsilon.map(|e| positive("epsilon", e)).transpose()?;
        let damping = non_negative("damping", p.damping.unwrap_or(10.0))?;
        let rounds = p.rounds.unwrap_or(10);
        if rounds == 0 {
            return Err(FedError::invalid("rounds", "rounds must be at least 1"));
        }
        let min_clients = p.min_clients.unwrap_or(3);
        if min_clients < 2 {
            return Err(FedError::invalid(
                "min_clients",
                "min_clients must be at least 2: one client's update would be revealed alone",
            ));
        }
        if p.neighbours.is_some_and(|k| k < 2) {
            return Err(FedError::invalid(
                "neighbours",
                "neighbours must be at least 2",
            ));
        }
        let (keys, users) = {
            let s = self.serving.state.read();
            let keys: Vec<String> = (0..s.item_meta.len() as u32)
                .map(bespoke_algo::ItemIdx)
                .filter(|&i| s.servable(i))
                .map(|i| s.item_key(i))
                .collect();
            (keys, s.users.len())
        };
        if keys.is_empty() {
            return Err(FedError::new(
                FedErrorKind::Conflict,
                "no_items",
                "",
                "the catalog has no servable items to train",
            ));
        }
        let population = p.population.unwrap_or(users).max(1);
        let expected_clients = p.expected_clients.unwrap_or(min_clients).max(1);
        let delta = 1.0 / population as f64;
        let noise_multiplier = match (p.noise_multiplier, epsilon) {
            (Some(s), _) => non_negative("noise_multiplier", s)?,
            (None, Some(eps)) => {
                let q = (expected_clients as f64 / population as f64).min(1.0);
                let s = noise_multiplier_for(q, rounds, eps, delta);
                if !s.is_finite() {
                    return Err(FedError::invalid(
                        "epsilon",
                        format!("no noise multiplier keeps {rounds} rounds within ε = {eps}"),
                    ));
                }
                s
            }
            (None, None) => 0.0,
        };
        let seed = p.seed.unwrap_or(0);
        let layout = Layout {
            items: keys.len(),
            dim: factors,
        };
        let mut init = bespoke_algo::Rng::seed_from_u64(seed);
        let factors_init = (0..layout.items * factors)
            .map(|_| init.f64() as f32 * 0.01)
            .collect();
        let run = Run {
            config: Config {
                factors,
                regularization,
                alpha,
                clip,
                epsilon,
                noise_multiplier,
                rounds,
                population,
                min_clients,
                expected_clients,
                neighbours: p.neighbours,
                secure_aggregation: p.secure_aggregation.unwrap_or(true),
                damping,
                seed,
            },
            keys,
            layout,
            factors: factors_init,
            round: 1,
            phase: Phase::Join,
            participants: BTreeMap::new(),
            round_seed: None,
            degree: None,
            aggregator: None,
            plain_sum: Vec::new(),
            submitted: BTreeSet::new(),
            dropped: Vec::new(),
            requests: BTreeMap::new(),
            seeds: Vec::new(),
            accountant: RdpAccountant::new(),
            delta,
            history: Vec::new(),
            started: Instant::now(),
            rng: os_rng()?,
        };
        tracing::info!(
            items = layout.items,
            dim = factors,
            sigma = noise_multiplier,
            "federated run started"
        );
        let mut slot = self.federated.run.lock();
        *slot = Some(run);
        Ok(status(slot.as_ref().expect("just set")))
    }

    fn with_run<T>(&self, f: impl FnOnce(&mut Run) -> Result<T>) -> Result<T> {
        let mut slot = self.federated.run.lock();
        let run = slot.as_mut().ok_or_else(|| {
            FedError::new(
                FedErrorKind::NoRun,
                "no_run",
                "",
                "no federated run: POST /v1/federated/start",
            )
        })?;
        f(run)
    }

    /// The current round.
    pub fn federated_round(&self) -> Result<RoundView> {
        self.with_run(|r| Ok(r.view()))
    }

    /// The run's settings and history.
    pub fn federated_status(&self) -> Result<StatusView> {
        self.with_run(|r| Ok(status(r)))
    }

    /// The largest update body a client may send: the layout's words as base64 (or as JSON
    /// numbers), plus room for the rest of the JSON. `None` without a run.
    pub fn federated_body_limit(&self) -> Option<usize> {
        let slot = self.federated.run.lock();
        let run = slot.as_ref()?;
        let n = run.layout.len();
        let payload = if run.config.secure_aggregation {
            (8 * n).div_ceil(3) * 4
        } else {
            // An f32 printed in full is at most 16 characters, plus its comma.
            n * 17
        };
        Some(payload + 4096)
    }

    /// Adds a client to the round in `join`.
    pub fn federated_join(&self, id: ClientId, public_key: [u8; 32]) -> Result<RoundView> {
        self.with_run(|r| {
            if r.phase != Phase::Join {
                return Err(r.wrong_phase(Phase::Join));
            }
            if r.participants.contains_key(&id) {
                return Err(FedError::new(
                    FedErrorKind::Conflict,
                    "duplicate_client",
                    "client_id",
                    format!("client {id} has already joined round {}", r.round),
                ));
            }
            r.participants.insert(id, public_key);
            Ok(r.view())
        })
    }

    /// `join` → `submit`: fixes the participants, the round seed and the neighbour graph.
    pub fn federated_close_join(&self, round: u64) -> Result<RoundView> {
        self.with_run(|r| {
            r.check_round(round, Phase::Join)?;
            let n = r.participants.len();
            if n < r.config.min_clients {
                return Err(FedError::new(
                    FedErrorKind::Conflict,
                    "too_few_clients",
                    "round",
                    format!(
                        "{n} clients joined, min_clients is {}",
                        r.config.min_clients
                    ),
                ));
            }
            let k = r
                .config
                .neighbours
                .unwrap_or_else(|| secagg::default_degree(n))
                .min(n - 1);
            let seed = r.rng.next_u64();
            let ids: Vec<ClientId> = r.participants.keys().copied().collect();
            if r.config.secure_aggregation {
                let graph = secagg::neighbours(seed, &ids, k).map_err(|e| {
                    FedError::new(
                        FedErrorKind::Invalid,
                        "invalid_round",
                        "neighbours",
                        e.to_string(),
                    )
                })?;
                r.aggregator = Some(Aggregator::new(r.round, r.layout.len(), graph));
            } else {
                r.plain_sum = vec![0.0; r.layout.len()];
            }
            r.round_seed = Some(seed);
            r.degree = Some(k);
            r.phase = Phase::Submit;
            Ok(r.view())
        })
    }

    /// Takes a participant's update; aggregates when it is the last one.
    pub fn federated_update(&self, round: u64, id: ClientId, update: Update) -> Result<RoundView> {
        self.with_run(|r| {
            if round < r.round {
                return Err(FedError::new(
                    FedErrorKind::Conflict,
                    "wrong_round",
                    "round",
                    format!("round {round} is over: the current round is {}", r.round),
                ));
            }
            r.check_round(round, Phase::Submit)?;
            r.participant(id)?;
            if r.submitted.contains(&id) {
                return Err(FedError::new(
                    FedErrorKind::Conflict,
                    "duplicate_update",
                    "client_id",
                    format!("client {id} has already sent its update for round {round}"),
                ));
            }
            let expected = r.layout.len();
            let (got, field) = match &update {
                Update::Masked(w) => (w.len(), "masked"),
                Update::Plain(v) => (v.len(), "update"),
            };
            if got != expected {
                return Err(FedError::new(
                    FedErrorKind::Invalid,
                    "wrong_length",
                    field,
                    format!("an update has {expected} values in this run, got {got}"),
                ));
            }
            match (update, r.config.secure_aggregation) {
                (Update::Masked(words), true) => {
                    let agg = r.aggregator.as_mut().expect("a secure round in submit");
                    agg.add(id, &words).map_err(|e| {
                        FedError::new(
                            FedErrorKind::Conflict,
                            "rejected_update",
                            "masked",
                            e.to_string(),
                        )
                    })?;
                }
                (Update::Plain(values), false) => {
                    for (s, v) in r.plain_sum.iter_mut().zip(values) {
                        *s += f64::from(v);
                    }
                }
                (Update::Masked(_), false) => {
                    return Err(FedError::invalid(
                        "masked",
                        "this run has secure_aggregation off: send `update`",
                    ));
                }
                (Update::Plain(_), true) => {
                    return Err(FedError::invalid(
                        "update",
                        "this run uses secure aggregation: send `masked`",
                    ));
                }
            }
            r.submitted.insert(id);
            r.maybe_finish()?;
            Ok(r.view())
        })
    }

    /// `submit` → `unmask`: the participants that did not submit are dropped; survivors with
    /// a dropped neighbour are asked for seeds. Aggregates at once when no seed is needed;
    /// abandons the round (factors unchanged) when too few survived.
    pub fn federated_close(&self, round: u64) -> Result<RoundView> {
        self.with_run(|r| {
            r.check_round(round, Phase::Submit)?;
            r.dropped = r
                .participants
                .keys()
                .filter(|id| !r.submitted.contains(id))
                .copied()
                .collect();
            let too_few = match &r.aggregator {
                Some(agg) => agg.smallest_survivor_group() < r.config.min_clients,
                None => r.submitted.len() < r.config.min_clients,
            };
            if too_few {
                tracing::info!(round, "federated round abandoned: too few survivors");
                r.end_round(None);
                return Ok(r.view());
            }
            r.phase = Phase::Unmask;
            if let Some(agg) = r.aggregator.as_mut() {
                let survivors: Vec<ClientId> = r.submitted.iter().copied().collect();
                for id in survivors {
                    let req = agg.reveal_request(id).map_err(|e| {
                        FedError::new(FedErrorKind::Internal, "internal", "", e.to_string())
                    })?;
                    if !req.dropped.is_empty() {
                        r.requests.insert(id, req);
                    }
                }
            }
            r.maybe_finish()?;
            Ok(r.view())
        })
    }

    /// A survivor's seeds; aggregates when the last pending survivor has answered.
    pub fn federated_reveal(
        &self,
        round: u64,
        id: ClientId,
        seeds: Vec<RevealedSeed>,
    ) -> Result<RoundView> {
        self.with_run(|r| {
            r.check_round(round, Phase::Unmask)?;
            r.participant(id)?;
            let Some(req) = r.requests.get(&id) else {
                return Err(FedError::new(
                    FedErrorKind::Conflict,
                    "no_reveal_pending",
                    "client_id",
                    format!("no seeds are asked of client {id} (or they already arrived)"),
                ));
            };
            // Exactly one seed per dropped neighbour, each for a pair with `id`: a wrong seed
            // would fail the whole round at `finish`.
            let mut want: BTreeSet<(ClientId, ClientId)> = req
                .dropped
                .iter()
                .map(|&d| (id.min(d), id.max(d)))
                .collect();
            for s in &seeds {
                if !want.remove(&(s.a, s.b)) {
                    return Err(FedError::invalid(
                        "seeds",
                        format!(
                            "seed for pair ({}, {}) was not asked for (or sent twice)",
                            s.a, s.b
                        ),
                    ));
                }
            }
            if let Some((a, b)) = want.into_iter().next() {
                return Err(FedError::invalid(
                    "seeds",
                    format!("missing the seed for pair ({a}, {b})"),
                ));
            }
            r.requests.remove(&id);
            r.seeds.extend(seeds);
            r.maybe_finish()?;
            Ok(r.view())
        })
    }

    /// The run's current item factors as a signed `f32` bundle, with the round they are for.
    pub fn federated_model(&self) -> Result<(Vec<u8>, u64)> {
        let key = self
            .device_signing_key()
            .map_err(|e| FedError::new(FedErrorKind::Internal, "internal", "", e.to_string()))?;
        let (parts, round) = self.with_run(|r| {
            let d = r.layout.dim;
            let parts = BundleParts {
                header: Header {
                    format: bespoke_client::bundle::FORMAT,
                    model_version: r.round,
                    created_at: crate::time::format_rfc3339(crate::time::now_ms()),
                    dim: d as u32,
                    encoding: Encoding::F32,
                    alpha: r.config.alpha as f32,
                    event_weights: super::device::event_weights(&self.settings),
                    max_weight: self.settings.events.max_weight,
                    // Training folds in plain summed weights: no recency, no boost.
                    recent_boost: 0.0,
                    recent_half_life_ms: 0.0,
                    recency: Recency {
                        half_life: 0.0,
                        floor: 1.0,
                    },
                    propensity: false,
                    keys: r.keys.clone(),
                    categories: Vec::new(),
                    item_categories: vec![Vec::new(); r.keys.len()],
                },
                gram_reg: federated::gram_reg(&r.factors, d, r.config.regularization)
                    .into_iter()
                    .map(|v| v as f32)
                    .collect(),
                factors: r.factors.clone(),
                propensity: Vec::new(),
            };
            Ok((parts, r.round))
        })?;
        Ok((bespoke_client::encode(&parts, Encoding::F32, &key), round))
    }
}

fn status(r: &Run) -> StatusView {
    StatusView {
        config: r.config.clone(),
        round: r.round,
        phase: r.phase,
        joined: r.participants.len(),
        submitted: r.submitted.len(),
        history: r.history.clone(),
    }
}

/// Parses 64 hex digits.
pub fn parse_key(text: &str) -> Option<[u8; 32]> {
    let bytes = text.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (o, pair) in out.iter_mut().zip(bytes.chunks_exact(2)) {
        let s = std::str::from_utf8(pair).ok()?;
        *o = u8::from_str_radix(s, 16).ok()?;
    }
    Some(out)
}
