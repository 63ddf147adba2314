//! `bespoke import`: events from CSV, TSV or JSONL (with MovieLens presets and a generic column
//! mapping), users and items from JSONL.
//!
//! Events are parsed on one thread and committed on another in batches of `--batch` lines, so
//! parsing and the SQLite writer overlap. Each batch is one transaction. A bad line is reported
//! with its number; `--on-error skip` drops it and goes on, `--on-error stop` commits the lines
//! before it and stops.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, bail};
use bespoke_server::Settings;
use bespoke_server::engine::{Weights, now_ms};
use bespoke_server::privacy::{UserKeys, check_store};
use bespoke_server::time::TimeError;
use bespoke_server::validate::{FieldError, KeyError, check_event, check_item, check_key};
use bespoke_server::wire::{
    EventJson, ItemJson, TimestampError, USER_EXPORT_FORMAT, UserExport, UserJson,
};
use bespoke_store::{ConsentUpdate, EventBatch, ItemUpsert, NewEvent, Store, UserUpsert};
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

/// Input formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Format {
    /// Comma-separated, with a header line unless --no-header.
    Csv,
    /// Tab-separated, with a header line unless --no-header.
    Tsv,
    /// One JSON object per line.
    Jsonl,
    /// MovieLens 100K `u.data`: user, item, rating, Unix time; tab-separated, no header.
    Movielens,
    /// MovieLens `ratings.csv`: userId,movieId,rating,timestamp with a header.
    RatingsCsv,
}

/// What the file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Kind {
    /// Events (CSV, TSV or JSONL).
    Events,
    /// Users (JSONL, as `bespoke export users` writes them).
    Users,
    /// Items (JSONL, as `bespoke export items` writes them).
    Items,
    /// One user's export (`GET /v1/users/{key}/export`): profile, consent, times and events.
    UserExport,
}

/// What to do with a bad line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum OnError {
    /// Report it, leave it out and go on.
    Skip,
    /// Report it, keep the lines before it and stop.
    Stop,
}

#[derive(Debug, Args)]
pub(crate) struct ImportArgs {
    /// The file to read; `-` reads standard input.
    pub(crate) file: PathBuf,
    /// Input format; guessed from the extension (.csv, .tsv, .jsonl, .json, u.data) when absent.
    #[arg(long, value_enum)]
    pub(crate) format: Option<Format>,
    /// What the file holds.
    #[arg(long, value_enum, default_value = "events")]
    pub(crate) kind: Kind,
    /// Column of the user key: a header name, or a 1-based index.
    #[arg(long)]
    pub(crate) user_col: Option<String>,
    /// Column of the item key.
    #[arg(long)]
    pub(crate) item_col: Option<String>,
    /// Column of the event type.
    #[arg(long)]
    pub(crate) type_col: Option<String>,
    /// Event type of every line, when the file has no type column.
    #[arg(long = "type")]
    pub(crate) event_type: Option<String>,
    /// Column of the value (a rating, a weight).
    #[arg(long)]
    pub(crate) value_col: Option<String>,
    /// Column of the time: Unix seconds, Unix milliseconds or RFC 3339.
    #[arg(long)]
    pub(crate) time_col: Option<String>,
    /// Column of the event id (makes re-imports idempotent).
    #[arg(long)]
    pub(crate) id_col: Option<String>,
    /// The file has no header line (columns are then 1-based indexes).
    #[arg(long)]
    pub(crate) no_header: bool,
    /// What to do with a bad line.
    #[arg(long, value_enum, default_value = "stop")]
    pub(crate) on_error: OnError,
    /// Lines per transaction.
    #[arg(long, default_value_t = 100_000)]
    pub(crate) batch: usize,
    /// No progress bar.
    #[arg(long)]
    pub(crate) quiet: bool,
    /// Print the summary as JSON on standard output.
    #[arg(long)]
    pub(crate) json: bool,
}

/// What an import did.
#[derive(Debug, Default, Serialize)]
pub(crate) struct Summary {
    pub(crate) kind: &'static str,
    pub(crate) lines: u64,
    pub(crate) imported: u64,
    pub(crate) duplicates: u64,
    pub(crate) bad_lines: u64,
    pub(crate) users_created: u64,
    pub(crate) items_created: u64,
    pub(crate) seconds: f64,
    pub(crate) per_second: f64,
    /// Line at which `--on-error stop` stopped.
    pub(crate) stopped_at_line: Option<u64>,
    /// The first bad lines and why (at most 100).
    pub(crate) errors: Vec<LineError>,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct LineError {
    pub(crate) line: u64,
    pub(crate) message: String,
}

const MAX_REPORTED: usize = 100;

impl Summary {
    fn bad(&mut self, line: u64, message: String, quiet: bool) {
        self.bad_lines += 1;
        if self.errors.len() < MAX_REPORTED {
            if !quiet {
                eprintln!("line {line}: {message}");
            }
            self.errors.push(LineError { line, message });
        }
    }
}

pub(crate) fn run(settings: &Settings, args: &ImportArgs) -> anyhow::Result<()> {
    let store = bespoke_server::open_store(settings)
        .with_context(|| format!("opening the store in {}", settings.store.data_dir.display()))?;
    let summary = import(&*store, settings, args)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        eprintln!(
            "imported {} {} in {:.2} s ({:.0}/s): {} lines, {} duplicates, {} bad lines; {} new users, {} new items",
            summary.imported,
            summary.kind,
            summary.seconds,
            summary.per_second,
            summary.lines,
            summary.duplicates,
            summary.bad_lines,
            summary.users_created,
            summary.items_created
        );
        if summary.bad_lines as usize > summary.errors.len() {
            eprintln!(
                "({} more bad lines not shown)",
                summary.bad_lines as usize - summary.errors.len()
            );
        }
    }
    if let Some(line) = summary.stopped_at_line {
        bail!(
            "stopped at line {line} (--on-error stop); the {} lines before it were imported",
            summary.imported + summary.duplicates
        );
    }
    Ok(())
}

fn guess_format(path: &Path) -> anyhow::Result<Format> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    if name == "u.data" {
        return Ok(Format::Movielens);
    }
    match path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        Some("csv") => Ok(Format::Csv),
        Some("tsv" | "tab") => Ok(Format::Tsv),
        Some("jsonl" | "ndjson" | "json") => Ok(Format::Jsonl),
        _ => bail!(
            "cannot tell the format of {}: pass --format",
            path.display()
        ),
    }
}

fn open_input(path: &Path) -> anyhow::Result<(Box<dyn Read + Send>, Option<u64>)> {
    if path.as_os_str() == "-" {
        return Ok((Box::new(std::io::stdin()), None));
    }
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let len = file.metadata().ok().map(|m| m.len());
    Ok((Box::new(file), len))
}

fn progress(len: Option<u64>, quiet: bool) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    match len {
        Some(len) => ProgressBar::new(len).with_style(
            ProgressStyle::with_template(
                "{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .expect("valid template"),
        ),
        None => ProgressBar::new_spinner(),
    }
}

/// Imports according to `args` into `store`.
pub(crate) fn import(
    store: &dyn Store,
    settings: &Settings,
    args: &ImportArgs,
) -> anyhow::Result<Summary> {
    if args.batch == 0 {
        bail!("--batch must be at least 1");
    }
    let user_keys = UserKeys::new(settings);
    check_store(store, &user_keys)?;
    let format = match args.format {
        Some(f) => f,
        None => guess_format(&args.file)?,
    };
    let (mut input, len) = open_input(&args.file)?;
    let bar = progress(len, args.quiet || args.json);
    let started = Instant::now();
    let mut kind = args.kind;
    // A user export is recognised without --kind by its format tag, which the export endpoint
    // writes first.
    let mut head = Vec::new();
    if kind == Kind::Events && format == Format::Jsonl {
        input.by_ref().take(256).read_to_end(&mut head)?;
        let text = String::from_utf8_lossy(&head);
        if text.trim_start().starts_with('{') && text.contains(USER_EXPORT_FORMAT) {
            kind = Kind::UserExport;
        }
    }
    let input: Box<dyn Read + Send> = Box::new(std::io::Cursor::new(head).chain(input));
    let mut summary = match kind {
        Kind::UserExport => import_user_export(store, settings, input)?,
        Kind::Events => import_events(store, settings, args, format, input, &bar)?,
        Kind::Users | Kind::Items => {
            if format != Format::Jsonl {
                bail!("users and items are imported from JSONL (as `bespoke export` writes them)");
            }
            import_records(store, settings, args, input, &bar)?
        }
    };
    bar.finish_and_clear();
    summary.seconds = started.elapsed().as_secs_f64();
    summary.per_second = (summary.imported + summary.duplicates) as f64 / summary.seconds.max(1e-9);
    Ok(summary)
}

/// Imports one user's export: the profile with its consent and times, then the events (with
/// their ids, so a repeated import stores nothing twice). Any fault stops the import before the
/// profile is written.
fn import_user_export(
    store: &dyn Store,
    settings: &Settings,
    mut input: Box<dyn Read + Send>,
) -> anyhow::Result<Summary> {
    let mut text = String::new();
    input
        .read_to_string(&mut text)
        .context("reading the export")?;
    let export: UserExport = serde_json::from_str(&text).map_err(|e| {
        anyhow::anyhow!(
            "not a user export: line {}, column {}: {e}",
            e.line(),
            e.column()
        )
    })?;
    if export.format != USER_EXPORT_FORMAT {
        bail!(
            "format: expected {USER_EXPORT_FORMAT:?}, got {:?}",
            export.format
        );
    }
    let max_key = settings.limits.max_key_bytes;
    let key = export.user.key;
    check_key("user.key", &key, max_key)?;
    let time = |field: &str, t: &Option<String>| -> anyhow::Result<Option<i64>> {
        t.as_deref()
            .map(|t| parse_time(t).map_err(|m| anyhow::anyhow!("user.{field}: {m}")))
            .transpose()
    };
    let restore_times = match (
        time("created_at", &export.user.created_at)?,
        time("updated_at", &export.user.updated_at)?,
    ) {
        (Some(c), Some(u)) => Some((c, u)),
        _ => None,
    };
    let weights = Weights::new(settings);
    let user_keys = UserKeys::new(settings);
    let now = now_ms();
    let mut events = Vec::with_capacity(export.events.len());
    for (i, e) in export.events.into_iter().enumerate() {
        if e.user != key {
            bail!("events[{i}].user: {:?} is not the exported user", e.user);
        }
        let e = e
            .into_new_event()
            .map_err(|m| anyhow::anyhow!("events[{i}]: {m}"))?;
        check_event(settings, &weights, &e, now)
            .map_err(|f| anyhow::anyhow!("events[{i}].{}: {}", f.field, f.message))?;
        events.push(NewEvent {
            user: user_keys.to_store(&e.user).into_owned(),
            ..e
        });
    }
    let mut summary = Summary {
        kind: "user export",
        lines: 1 + events.len() as u64,
        ..Summary::default()
    };
    let up = store.put_users(vec![UserUpsert {
        key: user_keys.to_store(&key).into_owned(),
        attributes: export.user.attributes,
        consent: ConsentUpdate {
            personalization: Some(export.user.consent.personalization),
            training: Some(export.user.consent.training),
            marketing: Some(export.user.consent.marketing),
        },
        default_consent: settings.consent.defaults(),
        restore_times,
    }])?;
    summary.users_created += up.iter().filter(|u| u.created).count() as u64;
    for chunk in events.chunks(10_000) {
        let out = store.append_events(EventBatch {
            events: chunk.to_vec(),
            create_users: true,
            create_items: settings.events.create_missing_items,
            default_consent: settings.consent.defaults(),
            now: None,
        })?;
        for a in &out {
            summary.duplicates += a.duplicate as u64;
            summary.imported += !a.duplicate as u64;
            summary.items_created += a.created_item as u64;
        }
    }
    Ok(summary)
}

/// Where each event field comes from.
#[derive(Debug, Clone)]
struct Mapping {
    user: usize,
    item: usize,
    kind: KindSource,
    value: Option<usize>,
    time: Option<usize>,
    id: Option<usize>,
}

/// Where the event type comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
enum KindSource {
    /// A column (0-based).
    Column(usize),
    /// One type for every line (`--type`, or the format's `rating`).
    Constant(String),
}

/// Why a line is refused; printed after `line N: `, so it names the field but not the line.
#[derive(Debug, thiserror::Error)]
enum RecordError {
    /// The bytes are not UTF-8.
    #[error("the line is not valid UTF-8")]
    NotUtf8,
    /// A JSONL line that is not the expected JSON object.
    #[error("invalid JSON: {0}")]
    Json(serde_json::Error),
    /// A CSV line the reader cannot split (such as an unclosed quote).
    #[error("unreadable line: {0}")]
    Unreadable(csv::Error),
    /// The line has fewer columns than a mapped one.
    #[error("{what}: the line has {columns} columns, expected at least {needed}")]
    MissingColumn {
        /// The field mapped to the missing column.
        what: &'static str,
        /// Columns on the line.
        columns: usize,
        /// Columns needed.
        needed: usize,
    },
    /// A value column that is not a number.
    #[error("value: {0:?} is not a number")]
    Value(String),
    /// A CSV time column that is no time.
    #[error(transparent)]
    Time(#[from] BadTime),
    /// A time field of a JSONL user (`created_at`, `updated_at`) that is no time.
    #[error("{field}: {error}")]
    UserTime {
        /// The field.
        field: &'static str,
        /// Why.
        error: BadTime,
    },
    /// A JSONL event's `timestamp` that is not RFC 3339.
    #[error(transparent)]
    Timestamp(#[from] TimestampError),
    /// A bad user key.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// An event or item that breaks a rule of the API.
    #[error(transparent)]
    Invalid(#[from] FieldError),
    /// A JSONL item without its key.
    #[error("key: missing")]
    MissingKey,
}

/// A time that [`parse_time`] refuses; the message quotes it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum BadTime {
    /// Digits and dots that make no number (`1.2.3`).
    #[error("time {0:?} is not a number")]
    NotANumber(String),
    /// Not a number, and not RFC 3339 either.
    #[error("time {text:?} {why}")]
    NotRfc3339 {
        /// The time as written.
        text: String,
        /// What is wrong with it as RFC 3339.
        why: TimeError,
    },
}

fn find_column(
    header: Option<&csv::StringRecord>,
    given: Option<&str>,
    aliases: &[&str],
    what: &str,
) -> anyhow::Result<Option<usize>> {
    if let Some(g) = given {
        if let Ok(i) = g.parse::<usize>() {
            if i == 0 {
                bail!("--{what}-col: columns are numbered from 1");
            }
            return Ok(Some(i - 1));
        }
        let Some(h) = header else {
            bail!("--{what}-col {g:?}: without a header, columns are 1-based numbers");
        };
        return h.iter().position(|c| c == g).map(Some).with_context(|| {
            format!(
                "--{what}-col: no column {g:?} in the header ({})",
                h.iter().collect::<Vec<_>>().join(", ")
            )
        });
    }
    Ok(header.and_then(|h| {
        h.iter()
            .position(|c| aliases.iter().any(|a| a.eq_ignore_ascii_case(c)))
    }))
}

fn mapping(
    args: &ImportArgs,
    format: Format,
    header: Option<&csv::StringRecord>,
) -> anyhow::Result<Mapping> {
    if format == Format::Movielens {
        return Ok(Mapping {
            user: 0,
            item: 1,
            kind: KindSource::Constant("rating".into()),
            value: Some(2),
            time: Some(3),
            id: None,
        });
    }
    let user = find_column(
        header,
        args.user_col.as_deref(),
        &["user", "user_id", "userId", "userid"],
        "user",
    )?
    .context("no user column: name it with --user-col")?;
    let item = find_column(
        header,
        args.item_col.as_deref(),
        &["item", "item_id", "itemId", "movieId", "movie_id"],
        "item",
    )?
    .context("no item column: name it with --item-col")?;
    let value = find_column(
        header,
        args.value_col.as_deref(),
        &["value", "rating", "weight"],
        "value",
    )?;
    let time = find_column(
        header,
        args.time_col.as_deref(),
        &["timestamp", "time", "ts"],
        "time",
    )?;
    let id = find_column(header, args.id_col.as_deref(), &["event_id", "id"], "id")?;
    let kind = match (
        &args.event_type,
        find_column(
            header,
            args.type_col.as_deref(),
            &["type", "event_type", "kind"],
            "type",
        )?,
    ) {
        (Some(t), None) => KindSource::Constant(t.clone()),
        (None, Some(c)) => KindSource::Column(c),
        (Some(_), Some(_)) if args.type_col.is_some() => {
            bail!("give either --type or --type-col, not both")
        }
        (Some(t), Some(_)) => KindSource::Constant(t.clone()),
        (None, None) if format == Format::RatingsCsv => KindSource::Constant("rating".into()),
        (None, None) => bail!(
            "no event type: name a column with --type-col or give one type for all lines with --type"
        ),
    };
    Ok(Mapping {
        user,
        item,
        kind,
        value,
        time,
        id,
    })
}

/// Parses a time: Unix seconds (also fractional), Unix milliseconds (13 digits and more) or
/// RFC 3339.
pub(crate) fn parse_time(s: &str) -> Result<i64, BadTime> {
    let s = s.trim();
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        let v: f64 = s.parse().map_err(|_| BadTime::NotANumber(s.to_owned()))?;
        // 1e11 seconds is the year 5138; anything larger is milliseconds.
        return Ok(if v >= 1e11 {
            v as i64
        } else {
            (v * 1000.0).round() as i64
        });
    }
    bespoke_server::time::parse_rfc3339(s).map_err(|why| BadTime::NotRfc3339 {
        text: s.to_owned(),
        why,
    })
}

fn field<'r>(
    rec: &'r csv::StringRecord,
    i: usize,
    what: &'static str,
) -> Result<&'r str, RecordError> {
    rec.get(i).ok_or(RecordError::MissingColumn {
        what,
        columns: rec.len(),
        needed: i + 1,
    })
}

fn event_from_record(rec: &csv::StringRecord, m: &Mapping) -> Result<NewEvent, RecordError> {
    let kind = match &m.kind {
        KindSource::Column(c) => field(rec, *c, "type")?.to_owned(),
        KindSource::Constant(constant) => constant.clone(),
    };
    let value = match m.value {
        Some(c) => {
            let raw = field(rec, c, "value")?.trim();
            if raw.is_empty() {
                None
            } else {
                Some(
                    raw.parse::<f64>()
                        .map_err(|_| RecordError::Value(raw.to_owned()))?,
                )
            }
        }
        None => None,
    };
    let timestamp = match m.time {
        Some(c) => Some(parse_time(field(rec, c, "time")?)?),
        None => None,
    };
    let event_id = match m.id {
        Some(c) => Some(field(rec, c, "event_id")?.to_owned()),
        None => None,
    };
    Ok(NewEvent {
        event_id,
        user: field(rec, m.user, "user")?.to_owned(),
        item: field(rec, m.item, "item")?.to_owned(),
        kind,
        value,
        timestamp,
        context: None,
    })
}

enum Msg {
    Batch {
        events: Vec<NewEvent>,
        lines: Vec<u64>,
    },
    Bad {
        line: u64,
        error: RecordError,
    },
}

/// Runs on the parser thread: reads lines, sends batches and bad lines. Returns the number of
/// lines read, and the line it stopped at under `--on-error stop`.
fn parse_events(
    input: Box<dyn Read + Send>,
    format: Format,
    args: &ImportArgs,
    settings: &Settings,
    tx: std::sync::mpsc::SyncSender<Msg>,
    bar: &ProgressBar,
) -> anyhow::Result<(u64, Option<u64>)> {
    let weights = Weights::new(settings);
    let user_keys = UserKeys::new(settings);
    let now = now_ms();
    let stop = args.on_error == OnError::Stop;
    let mut events = Vec::with_capacity(args.batch);
    let mut lines = Vec::with_capacity(args.batch);
    let handle = |line: u64,
                  parsed: Result<NewEvent, RecordError>,
                  events: &mut Vec<NewEvent>,
                  lines: &mut Vec<u64>|
     -> bool {
        let checked = parsed.and_then(|e| {
            check_event(settings, &weights, &e, now)?;
            Ok(e)
        });
        match checked {
            Ok(mut e) => {
                if user_keys.pseudonymized() {
                    e.user = user_keys.to_store(&e.user).into_owned();
                }
                events.push(e);
                lines.push(line);
                true
            }
            Err(error) => {
                if stop && !events.is_empty() {
                    let _ = tx.send(Msg::Batch {
                        events: std::mem::take(events),
                        lines: std::mem::take(lines),
                    });
                }
                let _ = tx.send(Msg::Bad { line, error });
                !stop
            }
        }
    };
    let flush = |events: &mut Vec<NewEvent>, lines: &mut Vec<u64>| {
        let _ = tx.send(Msg::Batch {
            events: std::mem::replace(events, Vec::with_capacity(args.batch)),
            lines: std::mem::take(lines),
        });
    };
    let mut count = 0u64;
    let mut stopped = None;
    if format == Format::Jsonl {
        let reader = BufReader::with_capacity(1 << 20, input);
        let mut read = 0u64;
        for (i, line) in reader.split(b'\n').enumerate() {
            let n = i as u64 + 1;
            let bytes = line.with_context(|| format!("reading line {n}"))?;
            read += bytes.len() as u64 + 1;
            let text = String::from_utf8(bytes);
            if text.as_deref().is_ok_and(|t| t.trim().is_empty()) {
                continue;
            }
            count += 1;
            let parsed = text
                .map_err(|_| RecordError::NotUtf8)
                .and_then(|line| {
                    serde_json::from_str::<EventJson>(&line).map_err(RecordError::Json)
                })
                .and_then(|e| Ok(e.into_new_event()?));
            if !handle(n, parsed, &mut events, &mut lines) {
                stopped = Some(n);
                break;
            }
            if events.len() == args.batch {
                flush(&mut events, &mut lines);
                bar.set_position(read);
            }
        }
    } else {
        let delimiter = match format {
            Format::Tsv | Format::Movielens => b'\t',
            _ => b',',
        };
        let has_header = !args.no_header && format != Format::Movielens;
        let mut reader = csv::ReaderBuilder::new()
            .delimiter(delimiter)
            .has_headers(has_header)
            .flexible(true)
            .buffer_capacity(1 << 20)
            .from_reader(input);
        let header = if has_header {
            Some(reader.headers().context("reading the header line")?.clone())
        } else {
            None
        };
        let m = mapping(args, format, header.as_ref())?;
        let mut rec = csv::StringRecord::new();
        loop {
            let more = match reader.read_record(&mut rec) {
                Ok(more) => more,
                Err(e) => {
                    let n = e.position().map_or(count + 1, |p| p.line());
                    count += 1;
                    if !handle(n, Err(RecordError::Unreadable(e)), &mut events, &mut lines) {
                        stopped = Some(n);
                        break;
                    }
                    continue;
                }
            };
            if !more {
                break;
            }
            count += 1;
            let n = rec.position().map_or(count, |p| p.line());
            if rec.len() == 1 && rec.get(0).is_some_and(|f| f.trim().is_empty()) {
                count -= 1;
                continue;
            }
            if !handle(n, event_from_record(&rec, &m), &mut events, &mut lines) {
                stopped = Some(n);
                break;
            }
            if events.len() == args.batch {
                flush(&mut events, &mut lines);
                bar.set_position(reader.position().byte());
            }
        }
    }
    if !events.is_empty() {
        flush(&mut events, &mut lines);
    }
    Ok((count, stopped))
}

fn import_events(
    store: &dyn Store,
    settings: &Settings,
    args: &ImportArgs,
    format: Format,
    input: Box<dyn Read + Send>,
    bar: &ProgressBar,
) -> anyhow::Result<Summary> {
    let mut summary = Summary {
        kind: "events",
        ..Summary::default()
    };
    let quiet = args.json;
    let consent = settings.consent.defaults();
    // Only batches that can fail on a single line need a copy to retry without it.
    let may_reject = args.id_col.is_some()
        || format == Format::Jsonl
        || !settings.events.create_missing_users
        || !settings.events.create_missing_items;
    let (tx, rx) = std::sync::mpsc::sync_channel::<Msg>(2);
    let parsed = std::thread::scope(|scope| -> anyhow::Result<(u64, Option<u64>)> {
        let parser = scope.spawn(|| parse_events(input, format, args, settings, tx, bar));
        for msg in rx {
            match msg {
                Msg::Bad { line, error } => summary.bad(line, error.to_string(), quiet),
                Msg::Batch {
                    mut events,
                    mut lines,
                } => loop {
                    let batch = EventBatch {
                        events: if may_reject {
                            events.clone()
                        } else {
                            std::mem::take(&mut events)
                        },
                        create_users: settings.events.create_missing_users,
                        create_items: settings.events.create_missing_items,
                        default_consent: consent,
                        now: None,
                    };
                    match store.append_events(batch) {
                        Ok(out) => {
                            for a in &out {
                                summary.duplicates += a.duplicate as u64;
                                summary.imported += !a.duplicate as u64;
                                summary.users_created += a.created_user as u64;
                                summary.items_created += a.created_item as u64;
                            }
                            break;
                        }
                        Err(e) => {
                            use bespoke_store::Error as E;
                            let index = match &e {
                                E::EventConflict { index, .. }
                                | E::UnknownUser { index, .. }
                                | E::UnknownItem { index, .. } => *index,
                                _ => return Err(e).context("writing to the store"),
                            };
                            let line = lines[index];
                            summary.bad(line, e.to_string(), quiet);
                            if args.on_error == OnError::Stop {
                                events.truncate(index);
                                lines.truncate(index);
                                summary.stopped_at_line = Some(line);
                                if events.is_empty() {
                                    break;
                                }
                                continue;
                            }
                            events.remove(index);
                            lines.remove(index);
                            if events.is_empty() {
                                break;
                            }
                        }
                    }
                },
            }
            if summary.stopped_at_line.is_some() {
                break;
            }
        }
        parser
            .join()
            .map_err(|_| anyhow::anyhow!("the parser thread panicked"))?
    })?;
    summary.lines = parsed.0;
    summary.stopped_at_line = summary.stopped_at_line.or(parsed.1);
    Ok(summary)
}

/// Users and items: JSONL lines in the shape `bespoke export` writes, in batches of `--batch`.
fn import_records(
    store: &dyn Store,
    settings: &Settings,
    args: &ImportArgs,
    input: Box<dyn Read + Send>,
    bar: &ProgressBar,
) -> anyhow::Result<Summary> {
    let kind = args.kind;
    let user_keys = UserKeys::new(settings);
    let mut summary = Summary {
        kind: if kind == Kind::Users {
            "users"
        } else {
            "items"
        },
        ..Summary::default()
    };
    let quiet = args.json;
    let max_key = settings.limits.max_key_bytes;
    let default_consent = settings.consent.defaults();
    let mut users: Vec<(u64, UserUpsert)> = Vec::new();
    let mut items: Vec<(u64, ItemUpsert)> = Vec::new();
    let batch = args.batch.min(10_000);
    let mut read = 0u64;
    let reader = BufReader::with_capacity(1 << 20, input);
    let flush = |users: &mut Vec<(u64, UserUpsert)>,
                 items: &mut Vec<(u64, ItemUpsert)>,
                 summary: &mut Summary|
     -> anyhow::Result<()> {
        if !users.is_empty() {
            let out = store
                .put_users(users.drain(..).map(|(_, u)| u).collect())
                .context("writing users")?;
            summary.imported += out.len() as u64;
            summary.users_created += out.iter().filter(|u| u.created).count() as u64;
        }
        if !items.is_empty() {
            let batch: Vec<(u64, ItemUpsert)> = std::mem::take(items);
            match store.put_items(batch.iter().map(|(_, i)| i.clone()).collect()) {
                Ok(out) => {
                    summary.imported += out.len() as u64;
                    summary.items_created += out.iter().filter(|i| i.created).count() as u64;
                }
                // Find the offending lines one by one.
                Err(bespoke_store::Error::DimensionMismatch { .. }) => {
                    for (line, item) in batch {
                        match store.put_item(item) {
                            Ok(out) => {
                                summary.imported += 1;
                                summary.items_created += out.created as u64;
                            }
                            Err(e @ bespoke_store::Error::DimensionMismatch { .. }) => {
                                summary.bad(line, e.to_string(), quiet);
                                if args.on_error == OnError::Stop {
                                    summary.stopped_at_line = Some(line);
                                    return Ok(());
                                }
                            }
                            Err(e) => return Err(e).context("writing items"),
                        }
                    }
                }
                Err(e) => return Err(e).context("writing items"),
            }
        }
        Ok(())
    };
    for (i, line) in reader.split(b'\n').enumerate() {
        let n = i as u64 + 1;
        let bytes = line.with_context(|| format!("reading line {n}"))?;
        read += bytes.len() as u64 + 1;
        let line = match String::from_utf8(bytes) {
            Ok(l) if l.trim().is_empty() => continue,
            Ok(l) => l,
            Err(_) => {
                summary.lines += 1;
                summary.bad(n, RecordError::NotUtf8.to_string(), quiet);
                if args.on_error == OnError::Stop {
                    summary.stopped_at_line = Some(n);
                    break;
                }
                continue;
            }
        };
        summary.lines += 1;
        let parsed = match kind {
            Kind::Users => serde_json::from_str::<UserJson>(&line)
                .map_err(RecordError::Json)
                .and_then(|u| {
                    check_key("key", &u.key, max_key)?;
                    let time = |field: &'static str, t: &Option<String>| {
                        t.as_deref()
                            .map(|t| {
                                parse_time(t)
                                    .map_err(|error| RecordError::UserTime { field, error })
                            })
                            .transpose()
                    };
                    let restore_times = match (
                        time("created_at", &u.created_at)?,
                        time("updated_at", &u.updated_at)?,
                    ) {
                        (Some(c), Some(up)) => Some((c, up)),
                        _ => None,
                    };
                    users.push((
                        n,
                        UserUpsert {
                            key: user_keys.to_store(&u.key).into_owned(),
                            attributes: u.attributes,
                            consent: ConsentUpdate {
                                personalization: Some(u.consent.personalization),
                                training: Some(u.consent.training),
                                marketing: Some(u.consent.marketing),
                            },
                            default_consent,
                            restore_times,
                        },
                    ));
                    Ok(())
                }),
            _ => serde_json::from_str::<ItemJson>(&line)
                .map_err(RecordError::Json)
                .and_then(|mut it| {
                    let key = it.key.take().ok_or(RecordError::MissingKey)?;
                    let upsert = it.into_upsert(key);
                    check_item(&upsert, max_key)?;
                    items.push((n, upsert));
                    Ok(())
                }),
        };
        if let Err(error) = parsed {
            summary.bad(n, error.to_string(), quiet);
            if args.on_error == OnError::Stop {
                flush(&mut users, &mut items, &mut summary)?;
                summary.stopped_at_line = Some(n);
                return Ok(summary);
            }
        }
        if users.len() + items.len() >= batch {
            flush(&mut users, &mut items, &mut summary)?;
            bar.set_position(read);
            if summary.stopped_at_line.is_some() {
                return Ok(summary);
            }
        }
    }
    flush(&mut users, &mut items, &mut summary)?;
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_in_every_accepted_form() {
        assert_eq!(parse_time("881250949"), Ok(881_250_949_000));
        assert_eq!(parse_time("881250949.5"), Ok(881_250_949_500));
        assert_eq!(parse_time("1700000000123"), Ok(1_700_000_000_123));
        assert_eq!(parse_time("2024-01-01T00:00:00Z"), Ok(1_704_067_200_000));
        assert!(parse_time("yesterday").is_err());
        assert!(parse_time("").is_err());
    }

    /// Issue 14: a refused time says which time and what is wrong with it.
    #[test]
    fn bad_times_say_what_is_wrong() {
        assert_eq!(
            parse_time("1.2.3"),
            Err(BadTime::NotANumber("1.2.3".into()))
        );
        assert_eq!(
            parse_time("2024-01-01T00:00:00").unwrap_err().to_string(),
            "time \"2024-01-01T00:00:00\" has no time zone: end it with Z or an offset such as +02:00"
        );
        assert_eq!(
            parse_time(" 2024-01-32T00:00:00Z").unwrap_err().to_string(),
            "time \"2024-01-32T00:00:00Z\" is not a valid calendar date (2024-01-32 does not exist)"
        );
    }

    /// A CSV line's error names the field (the caller adds the line number).
    #[test]
    fn record_errors_name_the_field() {
        let m = Mapping {
            user: 0,
            item: 1,
            kind: KindSource::Column(4),
            value: Some(2),
            time: Some(3),
            id: None,
        };
        let error = |fields: &[&str]| {
            event_from_record(&csv::StringRecord::from(fields.to_vec()), &m)
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            error(&["u", "i", "1", "5"]),
            "type: the line has 4 columns, expected at least 5"
        );
        assert_eq!(
            error(&["u", "i", "x", "5", "view"]),
            "value: \"x\" is not a number"
        );
        assert_eq!(
            error(&["u", "i", "1", "soon", "view"]),
            "time \"soon\" has a non-digit in the year at position 1"
        );
        let e = event_from_record(
            &csv::StringRecord::from(vec!["u", "i", "", "5", "view"]),
            &m,
        )
        .unwrap();
        assert_eq!(
            (e.kind.as_str(), e.value, e.timestamp),
            ("view", None, Some(5000))
        );
    }

    #[test]
    fn header_aliases_and_explicit_columns() {
        let args = ImportArgs {
            file: "x.csv".into(),
            format: None,
            kind: Kind::Events,
            user_col: None,
            item_col: Some("sku".into()),
            type_col: None,
            event_type: Some("view".into()),
            value_col: None,
            time_col: Some("4".into()),
            id_col: None,
            no_header: false,
            on_error: OnError::Stop,
            batch: 10,
            quiet: true,
            json: false,
        };
        let header = csv::StringRecord::from(vec!["userId", "sku", "rating", "when"]);
        let m = mapping(&args, Format::Csv, Some(&header)).unwrap();
        assert_eq!(
            (m.user, m.item, m.value, m.time, m.id),
            (0, 1, Some(2), Some(3), None)
        );
        assert_eq!(m.kind, KindSource::Constant("view".into()));
        let no_type = ImportArgs {
            event_type: None,
            ..args
        };
        let err = mapping(&no_type, Format::Csv, Some(&header)).unwrap_err();
        assert!(err.to_string().contains("--type"), "{err}");
        let bad = ImportArgs {
            item_col: Some("nope".into()),
            ..no_type
        };
        assert!(
            mapping(&bad, Format::Csv, Some(&header))
                .unwrap_err()
                .to_string()
                .contains("nope")
        );
    }

    /// Fuzzing the CSV/TSV/JSONL import with arbitrary input (property tests; raise
    /// `PROPTEST_CASES` for a longer run): it never panics, accounts for every line as imported,
    /// duplicate or bad, and stores exactly what it says it imported.
    mod fuzz {
        use super::*;
        use bespoke_store::EventStore;
        use proptest::prelude::*;
        use std::sync::OnceLock;

        type Shared = std::sync::Mutex<(tempfile::TempDir, bespoke_store::SqliteStore)>;

        /// One store for all cases; the tests run in parallel, so each case holds it alone.
        fn store() -> &'static Shared {
            static STORE: OnceLock<Shared> = OnceLock::new();
            STORE.get_or_init(|| {
                let dir = tempfile::tempdir().unwrap();
                let s = bespoke_store::SqliteStore::open(dir.path(), Default::default()).unwrap();
                std::sync::Mutex::new((dir, s))
            })
        }

        fn run(format: Format, body: &[u8]) {
            let guard = store().lock().unwrap_or_else(|e| e.into_inner());
            let store = &guard.1;
            let file = tempfile::NamedTempFile::new().unwrap();
            std::fs::write(file.path(), body).unwrap();
            let args = ImportArgs {
                file: file.path().to_owned(),
                format: Some(format),
                kind: Kind::Events,
                user_col: None,
                item_col: None,
                type_col: None,
                event_type: None,
                value_col: None,
                time_col: None,
                id_col: None,
                no_header: false,
                on_error: OnError::Skip,
                batch: 7,
                quiet: true,
                json: true,
            };
            let before = store.stats().unwrap().events;
            let Ok(summary) = import(store, &Settings::default(), &args) else {
                // A clean refusal (e.g. a header without the needed columns) stores nothing.
                assert_eq!(store.stats().unwrap().events, before);
                return;
            };
            assert_eq!(
                summary.imported + summary.duplicates + summary.bad_lines,
                summary.lines,
                "{format:?} {summary:?} {:?}",
                String::from_utf8_lossy(body)
            );
            assert_eq!(store.stats().unwrap().events, before + summary.imported);
        }

        fn line() -> impl Strategy<Value = String> {
            let field = prop_oneof![
                "[a-z0-9]{1,6}",
                "\\PC{0,6}",
                Just(String::new()),
                Just("\"quoted, with comma\"".to_owned()),
                Just("view".to_owned()),
                Just("rating".to_owned()),
                Just("4.5".to_owned()),
                Just("NaN".to_owned()),
                Just("1e309".to_owned()),
                Just("1700000000".to_owned()),
                Just("2024-01-01T00:00:00Z".to_owned()),
            ];
            proptest::collection::vec(field, 0..7).prop_map(|f| f.join(","))
        }

        proptest! {
            #[test]
            fn fuzz_csv_lines(lines in proptest::collection::vec(line(), 0..12)) {
                let body = format!("user,item,type,value,timestamp\n{}", lines.join("\n"));
                run(Format::Csv, body.as_bytes());
            }

            #[test]
            fn fuzz_arbitrary_bytes_as_csv_and_jsonl(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
                let mut csv = b"user,item,type\n".to_vec();
                csv.extend_from_slice(&bytes);
                run(Format::Csv, &csv);
                run(Format::Tsv, &bytes);
                run(Format::Jsonl, &bytes);
            }
        }
    }
}
