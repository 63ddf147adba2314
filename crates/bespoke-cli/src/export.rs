//! `bespoke export`: users, items or events as JSONL, in the shapes `bespoke import` reads back.

use std::io::{BufWriter, Write};
use std::path::PathBuf;

use anyhow::Context;
use bespoke_server::Settings;
use bespoke_server::wire::{EventJson, ItemJson, UserJson};
use clap::{Args, ValueEnum};

/// Records read from the store per round trip.
const CHUNK: usize = 10_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum What {
    /// Users with attributes and consent.
    Users,
    /// Items with all their fields and embeddings.
    Items,
    /// Events in log order.
    Events,
}

#[derive(Debug, Args)]
pub(crate) struct ExportArgs {
    /// What to export.
    #[arg(value_enum)]
    what: What,
    /// Output file; standard output when absent.
    #[arg(long, short)]
    out: Option<PathBuf>,
}

pub(crate) fn run(settings: &Settings, args: &ExportArgs) -> anyhow::Result<()> {
    let store = bespoke_server::open_store(settings)
        .with_context(|| format!("opening the store in {}", settings.store.data_dir.display()))?;
    let sink: Box<dyn Write> = match &args.out {
        Some(p) => {
            Box::new(std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))?)
        }
        None => Box::new(std::io::stdout().lock()),
    };
    let mut out = BufWriter::with_capacity(1 << 20, sink);
    let mut count = 0u64;
    match args.what {
        What::Users => {
            let mut after = None;
            loop {
                let chunk = store.scan_users(after, CHUNK)?;
                let Some(last) = chunk.last() else { break };
                after = Some(last.idx);
                for u in chunk {
                    write_line(&mut out, &UserJson::from(u), &mut count)?;
                }
            }
        }
        What::Items => {
            let mut after = None;
            loop {
                let chunk = store.scan_items(after, CHUNK)?;
                let Some(last) = chunk.last() else { break };
                after = Some(last.idx);
                for i in chunk {
                    write_line(&mut out, &ItemJson::from(i), &mut count)?;
                }
            }
        }
        What::Events => {
            let mut after = 0;
            loop {
                let chunk = store.scan_events(after, CHUNK)?;
                let Some(last) = chunk.last() else { break };
                after = last.seq;
                for e in chunk {
                    write_line(&mut out, &EventJson::from(e), &mut count)?;
                }
            }
        }
    }
    out.flush()?;
    if args.out.is_some() {
        eprintln!("exported {count} records");
    }
    Ok(())
}

fn write_line<T: serde::Serialize>(
    out: &mut impl Write,
    record: &T,
    count: &mut u64,
) -> anyhow::Result<()> {
    serde_json::to_writer(&mut *out, record)?;
    out.write_all(b"\n")?;
    *count += 1;
    Ok(())
}
