//! Charts drawn with `plotters`. The trade-off chart of `bespoke fairness --sweep --chart`: NDCG@10 against popularity lift
//! (popularity debiasing's sweep) and against miscalibration (calibration's), one PNG with two
//! panels, drawn with `plotters`. Text needs a TrueType font from the system (DejaVu Sans or
//! Liberation Sans; Debian's `fonts-dejavu-core`).

use std::path::Path;

use anyhow::{Context, bail};
use plotters::prelude::*;
use plotters::style::{FontStyle, register_font};
use serde_json::Value;

/// Where Debian, Fedora and Arch keep a sans-serif TrueType font.
const FONTS: [&str; 4] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
];

fn load_font() -> anyhow::Result<()> {
    let path = FONTS
        .iter()
        .find(|p| Path::new(p).exists())
        .with_context(|| {
            format!(
                "no TrueType font for the chart's text (looked for {}): install fonts-dejavu-core",
                FONTS.join(", ")
            )
        })?;
    let bytes = std::fs::read(path).with_context(|| format!("reading {path}"))?;
    // plotters keeps fonts for the life of the process.
    let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
    register_font("sans-serif", FontStyle::Normal, bytes)
        .map_err(|_| anyhow::anyhow!("{path} is not a usable TrueType font"))?;
    Ok(())
}

/// `(x, y, weight)` of one re-ranker's rows.
fn series(rows: &[Value], reranker: &str, x: &str) -> Vec<(f64, f64, f64)> {
    rows.iter()
        .filter(|r| r["reranker"] == reranker)
        .filter_map(|r| {
            Some((
                r[x].as_f64()?,
                r["ndcg@10"].as_f64()?,
                r["weight"].as_f64()?,
            ))
        })
        .collect()
}

fn range(v: impl Iterator<Item = f64> + Clone) -> std::ops::Range<f64> {
    let lo = v.clone().fold(f64::INFINITY, f64::min);
    let hi = v.fold(f64::NEG_INFINITY, f64::max);
    let pad = ((hi - lo) * 0.08).max(1e-3);
    (lo - pad)..(hi + pad)
}

/// Draws the two panels into `path` (PNG, 1200 × 500).
pub(crate) fn tradeoff(path: &Path, model: &str, rows: &[Value]) -> anyhow::Result<()> {
    load_font()?;
    let panels = [
        (
            "popularity",
            "popularity_lift",
            "popularity lift (lower: less popularity bias)",
        ),
        (
            "calibration",
            "miscalibration",
            "miscalibration, KL (lower: better calibrated)",
        ),
    ];
    let root = BitMapBackend::new(path, (1200, 500)).into_drawing_area();
    root.fill(&WHITE)?;
    let halves = root.split_evenly((1, 2));
    for (area, (reranker, x, label)) in halves.iter().zip(panels) {
        let pts = series(rows, reranker, x);
        if pts.len() < 2 {
            bail!("the sweep has fewer than two {reranker} rows with NDCG@10 and {x}");
        }
        let mut chart = ChartBuilder::on(area)
            .caption(
                format!("{model}: NDCG@10 vs {x} ({reranker} weight 0 to 1)"),
                ("sans-serif", 18),
            )
            .margin(14)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(
                range(pts.iter().map(|p| p.0)),
                // Down to the 5% budget line, so that it is always drawn.
                range(
                    pts.iter()
                        .map(|p| p.1)
                        .chain(pts.iter().filter(|p| p.2 == 0.0).map(|p| p.1 * 0.95)),
                ),
            )?;
        chart
            .configure_mesh()
            .x_desc(label)
            .y_desc("NDCG@10")
            .label_style(("sans-serif", 13))
            .draw()?;
        // The targets' budget: 5% of NDCG@10 below the list without re-ranking.
        if let Some(base) = pts.iter().find(|p| p.2 == 0.0) {
            let xs = range(pts.iter().map(|p| p.0));
            chart
                .draw_series(LineSeries::new(
                    [(xs.start, base.1 * 0.95), (xs.end, base.1 * 0.95)],
                    RED.stroke_width(2),
                ))?
                .label("NDCG@10 of weight 0, minus 5%")
                .legend(|(x, y)| PathElement::new([(x, y), (x + 16, y)], RED));
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::LowerRight)
                .background_style(WHITE)
                .border_style(BLACK)
                .label_font(("sans-serif", 12))
                .draw()?;
        }
        chart.draw_series(LineSeries::new(
            pts.iter().map(|p| (p.0, p.1)),
            BLUE.stroke_width(2),
        ))?;
        chart.draw_series(
            pts.iter()
                .map(|p| Circle::new((p.0, p.1), 4, BLUE.filled())),
        )?;
        chart.draw_series(pts.iter().map(|p| {
            Text::new(
                format!("{:.1}", p.2),
                (p.0, p.1),
                ("sans-serif", 12).into_font(),
            )
        }))?;
    }
    root.present()
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// The chart of `bespoke federated-sim --chart`: NDCG@10 after each round of every run, with
/// central iALS and the targets (95% and 90% of it) as horizontal lines (PNG, 1000 × 560).
pub(crate) fn federated(
    path: &Path,
    central: f64,
    runs: &[(String, Vec<Value>)],
) -> anyhow::Result<()> {
    load_font()?;
    let rounds = runs
        .iter()
        .flat_map(|(_, rows)| rows.iter().filter_map(|r| r["round"].as_u64()))
        .max()
        .context("no rounds to draw")?;
    let top = runs
        .iter()
        .flat_map(|(_, rows)| rows.iter().filter_map(|r| r["ndcg@10"].as_f64()))
        .fold(central, f64::max)
        * 1.08;
    let root = BitMapBackend::new(path, (1000, 560)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Federated iALS on MovieLens 100K: NDCG@10 per round",
            ("sans-serif", 20),
        )
        .margin(16)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..rounds as f64 + 0.5, 0f64..top)?;
    chart
        .configure_mesh()
        .x_desc("round")
        .y_desc("NDCG@10")
        .label_style(("sans-serif", 13))
        .draw()?;
    let x_end = rounds as f64 + 0.5;
    for (share, label, color) in [
        (1.0, "central iALS".to_owned(), BLACK),
        (0.95, "95% of central".to_owned(), RGBColor(70, 70, 70)),
        (0.90, "90% of central".to_owned(), RGBColor(130, 130, 130)),
    ] {
        chart
            .draw_series(LineSeries::new(
                [(0.0, central * share), (x_end, central * share)],
                color.stroke_width(if share == 1.0 { 2 } else { 1 }),
            ))?
            .label(label)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], color));
    }
    let palette = [BLUE, RED, GREEN, MAGENTA, CYAN, RGBColor(230, 140, 0)];
    for ((name, rows), color) in runs.iter().zip(palette.iter().cycle()) {
        let pts: Vec<(f64, f64)> = rows
            .iter()
            .filter_map(|r| Some((r["round"].as_u64()? as f64, r["ndcg@10"].as_f64()?)))
            .collect();
        let color = *color;
        chart
            .draw_series(LineSeries::new(pts.iter().copied(), color.stroke_width(2)))?
            .label(name.clone())
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], color));
        chart.draw_series(pts.iter().map(|p| Circle::new(*p, 3, color.filled())))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE)
        .border_style(BLACK)
        .label_font(("sans-serif", 13))
        .draw()?;
    root.present()
        .with_context(|| format!("writing {}", path.display()))
}
