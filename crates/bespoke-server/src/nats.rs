//! Streaming ingestion from NATS JetStream (cargo feature `nats`, `docs/nats.md`): a second way
//! in besides `POST /v1/events`, for applications that already publish what their users do.
//!
//! [`run`] connects to `nats.url`, creates the stream `nats.stream` when it is missing (or uses
//! it as it is) and reads `nats.subject` through the durable pull consumer `nats.durable`, with
//! explicit acknowledgements. A message holds one event, or a JSON array of events, in the
//! shape of `POST /v1/events`' items ([`EventJson`]), and each event is held to the same rules
//! ([`check_event`]).
//!
//! Delivery is at least once, and storing is idempotent, so each event is stored once:
//!
//! - A message is acknowledged only after the store committed its events. A crash (or a
//!   shutdown) between the commit and the acknowledgement delivers it again, and its event ids
//!   make the store recognise the replay as a duplicate.
//! - An event without `event_id` gets one derived from where its message sits in the stream,
//!   `nats:<stream>:<created>:<sequence>` (`#<index>` appended within an array; `<created>` is
//!   the stream's creation time in Unix milliseconds, so that a stream deleted and created
//!   again, whose sequence numbers start over, gives new ids). Every delivery of the message
//!   gives the same id. Such an event without `timestamp` gets the time the message was
//!   published, which is the same on every delivery too (an event with an `event_id` and no
//!   timestamp gets the time it is stored, as over HTTP, so that a republished copy of it is
//!   recognised as a duplicate).
//!
//! A message that can never be stored (not JSON, not events, an invalid event, an id already
//! used for another event) is terminated so that it is not delivered again, counted, and logged
//! at warn with its sequence number and the field at fault, never with its payload. A store
//! failure (a full disk, an I/O error) leaves the message to be delivered again after
//! `nats.retry_delay_secs`.
//!
//! Messages that arrive together are stored together, in one transaction of at most
//! `limits.max_batch_events` events; when the store refuses such a group for one bad message,
//! its messages are stored one by one, so that the others still are.
//!
//! The task runs until the server stops (which aborts it, like the other background tasks):
//! what it stored and did not acknowledge yet is delivered again to the next start, and is a
//! duplicate then.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, AckKind, consumer, stream};
use bespoke_store::{Appended, Millis, NewEvent};
use futures_util::{FutureExt, StreamExt};
use tracing::{debug, info, warn};

use crate::engine::Engine;
use crate::metrics::Metrics;
use crate::settings::{NatsSettings, Settings};
use crate::time::now_ms;
use crate::validate::check_event;
use crate::weights::Weights;
use crate::wire::EventJson;

/// Prefix of the event ids derived from a message's place in the stream.
pub const DERIVED_ID_PREFIX: &str = "nats:";

/// First pause before connecting again after a failure; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// Longest pause between two attempts to connect.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// How often the server sends a heartbeat while there are no messages; two missed ones are
/// reported by the client (and it asks again).
const HEARTBEAT: Duration = Duration::from_secs(10);

/// Consumes `nats.stream` until the task is aborted (the server stops), storing its events
/// through [`Engine::ingest`] and counting them in `metrics` like those of `POST /v1/events`.
/// Connection and JetStream failures are logged and retried, with a pause growing from 1 to 30
/// seconds.
pub async fn run(engine: Arc<Engine>, metrics: Arc<Metrics>) {
    let settings = engine.settings().nats.clone();
    let mut ingest = Ingest {
        engine,
        metrics,
        settings,
        skipped: 0,
        backoff: FIRST_BACKOFF,
    };
    loop {
        if let Err(e) = ingest.session().await {
            warn!(
                target: "serve::nats",
                server = %redacted(&ingest.settings.url),
                error = %e,
                retry_secs = ingest.backoff.as_secs(),
                "NATS consumer failed; retrying"
            );
        }
        tokio::time::sleep(ingest.backoff).await;
        ingest.backoff = (ingest.backoff * 2).min(MAX_BACKOFF);
    }
}

/// Why a session with the NATS server ended.
type SessionError = Box<dyn std::error::Error + Send + Sync>;

/// The consumer's state across sessions.
struct Ingest {
    engine: Arc<Engine>,
    metrics: Arc<Metrics>,
    settings: NatsSettings,
    /// Messages terminated because they can never be stored, since start.
    skipped: u64,
    /// Pause before the next session, reset once one is consuming.
    backoff: Duration,
}

/// A message whose events are ready for the store.
struct Decoded {
    message: jetstream::Message,
    sequence: u64,
    events: Vec<NewEvent>,
    /// Whether the message is an array (its fields are named `[i].field`).
    array: bool,
}

/// How a group of messages went.
enum Stored {
    /// Everything stored was acknowledged; bad messages were terminated.
    Done,
    /// The store failed: what was not stored will be delivered again.
    Failed,
}

impl Ingest {
    /// Connects, binds the stream and the consumer, and stores messages until the connection
    /// or the consumer fails.
    async fn session(&mut self) -> Result<(), SessionError> {
        let s = &self.settings;
        let client = async_nats::ConnectOptions::new()
            .name("bespoke")
            .connect(s.url.as_str())
            .await?;
        let js = jetstream::new(client.clone());
        // A stream created here is a work queue: a message is removed once acknowledged, so
        // NATS keeps no copy of stored events (which erasure could not reach).
        let stream = js
            .get_or_create_stream(stream::Config {
                name: s.stream.clone(),
                subjects: vec![s.subject.clone()],
                retention: stream::RetentionPolicy::WorkQueue,
                ..Default::default()
            })
            .await?;
        let created = datetime_ms(stream.cached_info().created);
        let consumer: consumer::PullConsumer = stream
            .get_or_create_consumer(
                &s.durable,
                consumer::pull::Config {
                    durable_name: Some(s.durable.clone()),
                    ack_policy: consumer::AckPolicy::Explicit,
                    ack_wait: Duration::from_secs(s.ack_wait_secs),
                    filter_subject: s.subject.clone(),
                    ..Default::default()
                },
            )
            .await?;
        let bound = &consumer.cached_info().config;
        if bound.ack_policy != consumer::AckPolicy::Explicit {
            return Err(format!(
                "the consumer {:?} exists with ack policy {:?}; Bespoke needs explicit acknowledgements \
                 (delete the consumer or choose another nats.durable)",
                s.durable, bound.ack_policy
            )
            .into());
        }
        if bound.filter_subject != s.subject
            || bound.ack_wait != Duration::from_secs(s.ack_wait_secs)
        {
            // Not an error: the existing consumer is used as it is, like the stream.
            info!(
                target: "serve::nats",
                durable = %s.durable,
                filter_subject = %bound.filter_subject,
                ack_wait_secs = bound.ack_wait.as_secs(),
                "the durable consumer exists with other settings than nats.subject or nats.ack_wait_secs; using it as it is"
            );
        }
        let mut messages = consumer
            .stream()
            .max_messages_per_batch(s.batch)
            .heartbeat(HEARTBEAT)
            .messages()
            .await?;
        info!(
            target: "serve::nats",
            server = %redacted(&s.url),
            stream = %s.stream,
            subject = %s.subject,
            durable = %s.durable,
            "consuming events from NATS"
        );
        self.backoff = FIRST_BACKOFF;
        let batch = s.batch;
        loop {
            let mut group = Vec::new();
            let mut ended: Option<SessionError> = None;
            match messages.next().await {
                None => return Err("the consumer's message stream ended".into()),
                Some(Ok(m)) => group.push(m),
                Some(Err(e)) if is_passing(&e) => {
                    debug!(target: "serve::nats", error = %e, "NATS pull stream");
                    continue;
                }
                Some(Err(e)) => return Err(e.into()),
            }
            // Whatever else has arrived already joins the group, without waiting for more.
            while group.len() < batch {
                match messages.next().now_or_never() {
                    Some(Some(Ok(m))) => group.push(m),
                    Some(Some(Err(e))) if is_passing(&e) => {}
                    Some(Some(Err(e))) => {
                        ended = Some(e.into());
                        break;
                    }
                    Some(None) => {
                        ended = Some("the consumer's message stream ended".into());
                        break;
                    }
                    None => break,
                }
            }
            let outcome = self.handle(group, created).await;
            // Acknowledgements are buffered by the client; send them before anything else.
            client.flush().await?;
            if let Some(e) = ended {
                return Err(e);
            }
            if let Stored::Failed = outcome {
                // The store is failing: give it time rather than fail every message at once.
                tokio::time::sleep(Duration::from_secs(self.settings.retry_delay_secs)).await;
            }
        }
    }

    /// Decodes a group of messages, terminates the bad ones and stores the others.
    async fn handle(&mut self, group: Vec<jetstream::Message>, created: i64) -> Stored {
        let engine = self.engine.clone();
        let now = now_ms();
        let mut ready = Vec::with_capacity(group.len());
        for message in group {
            let place = match message.info() {
                Ok(info) => Place {
                    stream: self.settings.stream.as_str(),
                    created,
                    sequence: info.stream_sequence,
                    published: datetime_ms(info.published),
                },
                Err(e) => {
                    // Not from JetStream (no reply subject): nothing to acknowledge either.
                    warn!(target: "serve::nats", error = %e, "ignored a message without JetStream metadata");
                    continue;
                }
            };
            let sequence = place.sequence;
            match decode(
                &message.payload,
                &place,
                engine.settings(),
                engine.weights(),
                now,
            ) {
                Ok((events, array)) => ready.push(Decoded {
                    message,
                    sequence,
                    events,
                    array,
                }),
                Err(why) => self.reject(&message, sequence, &why).await,
            }
        }
        let max = engine.settings().limits.max_batch_events;
        let mut chunk: Vec<Decoded> = Vec::new();
        let mut size = 0;
        let mut outcome = Stored::Done;
        for d in ready {
            if matches!(outcome, Stored::Failed) {
                retry_later(&d.message, &self.settings).await;
                continue;
            }
            if !chunk.is_empty() && size + d.events.len() > max {
                outcome = self.store(std::mem::take(&mut chunk)).await;
                size = 0;
                if matches!(outcome, Stored::Failed) {
                    retry_later(&d.message, &self.settings).await;
                    continue;
                }
            }
            size += d.events.len();
            chunk.push(d);
        }
        if !chunk.is_empty() {
            outcome = self.store(chunk).await;
        }
        outcome
    }

    /// Stores a chunk of messages in one transaction, or one by one when the store refuses
    /// the chunk for what one of them holds; acknowledges what was stored.
    async fn store(&mut self, chunk: Vec<Decoded>) -> Stored {
        if chunk.len() > 1 {
            let events: Vec<NewEvent> = chunk.iter().flat_map(|d| d.events.clone()).collect();
            match self.ingest(events).await {
                Ok(appended) => {
                    self.count(&appended);
                    for d in &chunk {
                        ack(&d.message).await;
                    }
                    return Stored::Done;
                }
                // One of them is at fault: found below, storing them one by one.
                Err(Some(e)) if e.is_user_error() => {}
                Err(e) => {
                    self.log_failure(e);
                    for d in &chunk {
                        retry_later(&d.message, &self.settings).await;
                    }
                    return Stored::Failed;
                }
            }
        }
        let mut outcome = Stored::Done;
        for d in chunk {
            if matches!(outcome, Stored::Failed) {
                retry_later(&d.message, &self.settings).await;
                continue;
            }
            match self.ingest(d.events).await {
                Ok(appended) => {
                    self.count(&appended);
                    ack(&d.message).await;
                }
                Err(Some(e)) if e.is_user_error() => {
                    let why = store_rejection(&e, d.array);
                    self.reject(&d.message, d.sequence, &why).await;
                }
                Err(e) => {
                    self.log_failure(e);
                    retry_later(&d.message, &self.settings).await;
                    outcome = Stored::Failed;
                }
            }
        }
        outcome
    }

    /// Logs a store failure (`None`: the ingestion task panicked, logged already).
    fn log_failure(&self, e: Option<bespoke_store::Error>) {
        if let Some(e) = e {
            warn!(
                target: "serve::nats",
                error = %e,
                retry_secs = self.settings.retry_delay_secs,
                "storing events from NATS failed; they will be delivered again"
            );
        }
    }

    /// [`Engine::ingest`] on the blocking pool; `Err(None)` if it panicked.
    async fn ingest(
        &self,
        events: Vec<NewEvent>,
    ) -> Result<Vec<Appended>, Option<bespoke_store::Error>> {
        let engine = self.engine.clone();
        match tokio::task::spawn_blocking(move || engine.ingest(events)).await {
            Ok(result) => result.map_err(Some),
            Err(e) => {
                tracing::error!(target: "serve::nats", error = %e, "storing events from NATS panicked");
                Err(None)
            }
        }
    }

    fn count(&self, appended: &[Appended]) {
        let duplicates = appended.iter().filter(|a| a.duplicate).count() as u64;
        self.metrics
            .record_events(appended.len() as u64 - duplicates, duplicates);
    }

    /// Terminates a message that can never be stored, and says so without its payload.
    async fn reject(&mut self, message: &jetstream::Message, sequence: u64, why: &Rejection) {
        self.skipped += 1;
        warn!(
            target: "serve::nats",
            stream = %self.settings.stream,
            sequence,
            reason = why.code(),
            field = why.field(),
            skipped = self.skipped,
            "skipped a NATS message that cannot be stored"
        );
        if let Rejection::Invalid { message, .. } = why {
            // The rule broken; it can quote a value or a timestamp, so not at warn.
            debug!(target: "serve::nats", sequence, reason = %message, "the skipped message's event");
        }
        if let Err(e) = message.ack_with(AckKind::Term).await {
            debug!(target: "serve::nats", error = %e, "terminating a message failed; it will come again");
        }
    }
}

/// Acknowledges a stored message. A lost acknowledgement only delivers the message again,
/// which is then a duplicate.
async fn ack(message: &jetstream::Message) {
    if let Err(e) = message.ack().await {
        debug!(target: "serve::nats", error = %e, "acknowledging a message failed; it will come again");
    }
}

/// Asks for a message again after `nats.retry_delay_secs` (not stored because of a store
/// failure).
async fn retry_later(message: &jetstream::Message, settings: &NatsSettings) {
    let delay = Duration::from_secs(settings.retry_delay_secs);
    if let Err(e) = message.ack_with(AckKind::Nak(Some(delay))).await {
        debug!(target: "serve::nats", error = %e, "refusing a message failed; it will come again after the ack wait");
    }
}

/// Whether a pull stream error is one the client recovers from by itself.
fn is_passing(e: &consumer::pull::MessagesError) -> bool {
    matches!(
        e.kind(),
        consumer::pull::MessagesErrorKind::MissingHeartbeat
    )
}

/// A JetStream time in Unix milliseconds.
fn datetime_ms(t: async_nats::datetime::DateTime) -> Millis {
    (t.unix_timestamp_nanos() / 1_000_000) as Millis
}

/// The URL without credentials, for logs.
fn redacted(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let host = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
            format!("{scheme}://{host}")
        }
        None => url.rsplit_once('@').map_or(url, |(_, h)| h).to_owned(),
    }
}

/// Where a message sits in its stream: what derived ids and default timestamps come from.
#[derive(Debug, Clone, Copy)]
struct Place<'a> {
    stream: &'a str,
    /// The stream's creation time, Unix milliseconds.
    created: Millis,
    /// The message's sequence number in the stream.
    sequence: u64,
    /// When the message was published, Unix milliseconds.
    published: Millis,
}

impl Place<'_> {
    /// The id of the event at `index` of an array message (`None`: the message is one event).
    fn event_id(&self, index: Option<usize>) -> String {
        let Place {
            stream,
            created,
            sequence,
            ..
        } = self;
        match index {
            None => format!("{DERIVED_ID_PREFIX}{stream}:{created}:{sequence}"),
            Some(i) => format!("{DERIVED_ID_PREFIX}{stream}:{created}:{sequence}#{i}"),
        }
    }
}

/// Why a message can never be stored. Holds no payload: it is logged.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Rejection {
    /// Not JSON, or JSON that is not an event or an array of events.
    Json {
        /// Where the parser stopped (`[2].value`); a path into `context` stops at `context`.
        at: String,
    },
    /// An empty array.
    Empty,
    /// More events than `limits.max_batch_events`.
    TooMany,
    /// An event breaks a rule of `POST /v1/events`.
    Invalid {
        /// The field (`user`, `[3].timestamp`).
        at: String,
        /// The rule broken ([`check_event`]'s message; it never quotes a key).
        message: String,
    },
    /// The store refused an event: its id was used for another event, has the format of
    /// server-issued ids, or it names a user or item that does not exist and may not be created.
    Store {
        /// The field (`event_id`, `[3].user`).
        at: String,
        /// What the API answers for it (`event_conflict`, ...).
        code: &'static str,
    },
}

impl Rejection {
    fn code(&self) -> &'static str {
        match self {
            Self::Json { .. } => "invalid_json",
            Self::Empty => "no_events",
            Self::TooMany => "too_many_events",
            Self::Invalid { .. } => "invalid_event",
            Self::Store { code, .. } => code,
        }
    }

    fn field(&self) -> &str {
        match self {
            Self::Json { at } | Self::Invalid { at, .. } | Self::Store { at, .. } => at,
            Self::Empty | Self::TooMany => "",
        }
    }
}

/// The field of event `index` within a message: `[3].user` in an array, `user` alone.
fn field_at(array: bool, index: usize, field: &str) -> String {
    if array {
        format!("[{index}].{field}")
    } else {
        field.to_owned()
    }
}

/// What a store error, for a message stored alone, says about the message.
fn store_rejection(e: &bespoke_store::Error, array: bool) -> Rejection {
    use bespoke_store::Error as E;
    let (index, field, code) = match e {
        E::EventConflict { index, .. } => (*index, "event_id", "event_conflict"),
        E::ReservedEventId { index, .. } => (*index, "event_id", "reserved_event_id"),
        E::UnknownUser { index, .. } => (*index, "user", "unknown_user"),
        E::UnknownItem { index, .. } => (*index, "item", "unknown_item"),
        _ => {
            return Rejection::Store {
                at: String::new(),
                code: "invalid_input",
            };
        }
    };
    Rejection::Store {
        at: field_at(array, index, field),
        code,
    }
}

/// Parses a message: one event (`{...}`) or an array of them, checked like `POST /v1/events`'
/// items, with derived ids and publish times filled in where the event has no id (see the
/// module doc). Also says whether it was an array.
fn decode(
    payload: &[u8],
    place: &Place<'_>,
    settings: &Settings,
    weights: &Weights,
    now: Millis,
) -> Result<(Vec<NewEvent>, bool), Rejection> {
    let array = payload
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|&b| b == b'[');
    let parsed: Vec<EventJson> = if array {
        parse(payload)?
    } else {
        vec![parse(payload)?]
    };
    if parsed.is_empty() {
        return Err(Rejection::Empty);
    }
    if parsed.len() > settings.limits.max_batch_events {
        return Err(Rejection::TooMany);
    }
    let mut events = Vec::with_capacity(parsed.len());
    for (i, e) in parsed.into_iter().enumerate() {
        let mut event = e.into_new_event().map_err(|e| Rejection::Invalid {
            at: field_at(array, i, "timestamp"),
            message: e.to_string(),
        })?;
        let derived = event.event_id.is_none();
        if derived && event.timestamp.is_none() {
            event.timestamp = Some(place.published);
        }
        check_event(settings, weights, &event, now).map_err(|f| Rejection::Invalid {
            at: field_at(array, i, &f.field),
            message: f.message,
        })?;
        // After the check: a derived id is ours, not held to the client's key limits.
        if derived {
            event.event_id = Some(place.event_id(array.then_some(i)));
        }
        events.push(event);
    }
    Ok((events, array))
}

/// Parses JSON strictly (the whole payload, unknown fields refused), naming where it failed.
fn parse<T: serde::de::DeserializeOwned>(payload: &[u8]) -> Result<T, Rejection> {
    let failed = |path: String| {
        // Keys inside `context` are the sender's data.
        let at = match path.find("context") {
            Some(i) => path[..i + "context".len()].to_owned(),
            None => path,
        };
        Rejection::Json { at }
    };
    let mut de = serde_json::Deserializer::from_slice(payload);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        failed(if path == "." { String::new() } else { path })
    })?;
    de.end().map_err(|_| failed(String::new()))?;
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLACE: Place<'static> = Place {
        stream: "EVENTS",
        created: 1_700_000_000_000,
        sequence: 42,
        published: 1_700_000_100_000,
    };

    fn decode_now(payload: &str) -> Result<(Vec<NewEvent>, bool), Rejection> {
        let settings = Settings::default();
        let weights = Weights::new(&settings);
        decode(
            payload.as_bytes(),
            &PLACE,
            &settings,
            &weights,
            1_700_000_200_000,
        )
    }

    #[test]
    fn an_event_without_id_gets_one_from_its_place_and_the_publish_time() {
        let (events, array) = decode_now(r#"{"user":"u","item":"i","type":"view"}"#).unwrap();
        assert!(!array);
        assert_eq!(
            events[0].event_id.as_deref(),
            Some("nats:EVENTS:1700000000000:42")
        );
        assert_eq!(events[0].timestamp, Some(PLACE.published));
        // The same message decoded again (a redelivery) gives the same events.
        let (again, _) = decode_now(r#"{"user":"u","item":"i","type":"view"}"#).unwrap();
        assert_eq!(again, events);
    }

    #[test]
    fn arrays_number_their_events_and_client_ids_are_kept() {
        let payload = r#" [
            {"user":"u","item":"i","type":"view"},
            {"event_id":"e-1","user":"u","item":"j","type":"click"},
            {"user":"u","item":"k","type":"view","timestamp":"2023-11-14T22:00:00Z"}
        ]"#;
        let (events, array) = decode_now(payload).unwrap();
        assert!(array);
        let ids: Vec<_> = events.iter().map(|e| e.event_id.as_deref()).collect();
        assert_eq!(
            ids,
            [
                Some("nats:EVENTS:1700000000000:42#0"),
                Some("e-1"),
                Some("nats:EVENTS:1700000000000:42#2")
            ]
        );
        // A client's id keeps a missing timestamp missing, so that a republished copy matches;
        // a sent timestamp is kept.
        assert_eq!(events[1].timestamp, None);
        assert_eq!(events[2].timestamp, Some(1_699_999_200_000));
    }

    #[test]
    fn bad_messages_are_named_without_their_payload() {
        let cases = [
            ("not json", "invalid_json", ""),
            (r#"{"user":"alice","item":"i"}"#, "invalid_json", ""),
            (
                r#"{"user":"alice","item":"i","type":"view","extra":1}"#,
                "invalid_json",
                "extra",
            ),
            (
                r#"[{"user":"alice","item":"i","type":7}]"#,
                "invalid_json",
                "[0].type",
            ),
            (
                r#"{"user":"alice","item":"i","type":"view","context":{"secret":{"x":"y"}}} x"#,
                "invalid_json",
                "",
            ),
            (
                r#"{"user":"alice","item":"i","type":"view","context":{"secret":[1}}"#,
                "invalid_json",
                "context",
            ),
            ("[]", "no_events", ""),
            (
                r#"{"user":"","item":"i","type":"view"}"#,
                "invalid_event",
                "user",
            ),
            (
                r#"[{"user":"alice","item":"i","type":"view"},{"user":"alice","item":"i","type":"teleport"}]"#,
                "invalid_event",
                "[1].type",
            ),
            (
                r#"{"user":"alice","item":"i","type":"view","timestamp":"yesterday"}"#,
                "invalid_event",
                "timestamp",
            ),
        ];
        for (payload, code, field) in cases {
            let why = decode_now(payload).unwrap_err();
            assert_eq!((why.code(), why.field()), (code, field), "{payload}");
            assert!(!format!("{why:?}").contains("alice"), "{why:?}");
            assert!(!format!("{why:?}").contains("secret"), "{why:?}");
        }
    }

    #[test]
    fn a_message_holds_at_most_max_batch_events() {
        let mut settings = Settings::default();
        settings.limits.max_batch_events = 2;
        let weights = Weights::new(&settings);
        let three = r#"[{"user":"u","item":"a","type":"view"},{"user":"u","item":"b","type":"view"},{"user":"u","item":"c","type":"view"}]"#;
        let why = decode(three.as_bytes(), &PLACE, &settings, &weights, 0).unwrap_err();
        assert_eq!(why, Rejection::TooMany);
    }

    #[test]
    fn store_refusals_name_the_field() {
        let conflict = bespoke_store::Error::EventConflict {
            index: 3,
            event_id: "e".into(),
        };
        assert_eq!(
            store_rejection(&conflict, true),
            Rejection::Store {
                at: "[3].event_id".into(),
                code: "event_conflict"
            }
        );
        let unknown = bespoke_store::Error::UnknownUser {
            index: 0,
            key: "alice".into(),
        };
        let why = store_rejection(&unknown, false);
        assert_eq!((why.code(), why.field()), ("unknown_user", "user"));
    }

    #[test]
    fn logged_urls_have_no_credentials() {
        assert_eq!(redacted("nats://user:pa@ss@host:4222"), "nats://host:4222");
        assert_eq!(redacted("tls://token@host:4222"), "tls://host:4222");
        assert_eq!(redacted("nats://127.0.0.1:4222"), "nats://127.0.0.1:4222");
    }
}
