//! Charts for `chips compare` (bars) and `fleet` (Gantt), each written as SVG and PNG.
//!
//! Text is laid out and, in PNG, rasterised by plotters' `ab_glyph` backend with the DejaVu Sans
//! font embedded from the `dejavu` crate, so no system font library is needed.

use crate::fleet::Schedule;
use anyhow::{anyhow, Result};
use plotters::coord::Shift;
use plotters::prelude::*;
use std::path::{Path, PathBuf};
use std::sync::Once;

const FONT: &str = "sans-serif";
const SIZE: (u32, u32) = (1000, 600);

fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // DejaVu Sans is a valid TrueType font; a failure here would be a broken dependency.
        let _ = plotters::style::register_font(FONT, FontStyle::Normal, dejavu::sans::regular());
    });
}

fn err<E: std::fmt::Display>(path: &Path) -> impl Fn(E) -> anyhow::Error + '_ {
    move |e| anyhow!("cannot write chart {}: {e}", path.display())
}

/// One bar of the comparison chart.
pub struct Bar {
    /// Chip name.
    pub label: String,
    /// Value to plot.
    pub value: f64,
}

/// A horizontal bar chart with one bar per chip.
pub fn bars(dir: &Path, stem: &str, title: &str, unit: &str, bars: &[Bar]) -> Result<Vec<PathBuf>> {
    let max = bars.iter().map(|b| b.value).fold(0.0, f64::max).max(1e-9) * 1.15;
    let labels: Vec<String> = bars.iter().map(|b| b.label.clone()).collect();
    write(
        dir,
        stem,
        |a| draw_bars(a, title, unit, max, &labels, bars),
        |a| draw_bars(a, title, unit, max, &labels, bars),
    )
}

fn draw_bars<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    title: &str,
    unit: &str,
    max: f64,
    labels: &[String],
    bars: &[Bar],
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let n = bars.len();

    area.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
    let mut chart = ChartBuilder::on(area)
        .caption(title, (FONT, 24))
        .margin(20)
        .x_label_area_size(40)
        .y_label_area_size(90)
        .build_cartesian_2d(0.0..max, (0..n).into_segmented())
        .map_err(|e| anyhow!("{e}"))?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .x_desc(unit)
        .y_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) => labels.get(*i).cloned().unwrap_or_default(),
            _ => String::new(),
        })
        .label_style((FONT, 16))
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    chart
        .draw_series(bars.iter().enumerate().map(|(i, b)| {
            let mut r = Rectangle::new(
                [(0.0, SegmentValue::Exact(i)), (b.value, SegmentValue::Exact(i + 1))],
                Palette99::pick(i).filled(),
            );
            r.set_margin(8, 8, 0, 0);
            r
        }))
        .map_err(|e| anyhow!("{e}"))?;
    chart
        .draw_series(
            bars.iter()
                .enumerate()
                .map(|(i, b)| Text::new(format!(" {:.3}", b.value), (b.value, SegmentValue::CenterOf(i)), (FONT, 15))),
        )
        .map_err(|e| anyhow!("{e}"))?;
    Ok(())
}

/// A Gantt chart of a fleet schedule: one row per job, coloured by chip kind.
pub fn gantt(dir: &Path, stem: &str, sched: &Schedule) -> Result<Vec<PathBuf>> {
    let rows = &sched.assignments;
    let last_deadline = rows.iter().filter_map(|a| a.deadline_days).fold(0.0, f64::max);
    let end = sched.makespan_days.max(last_deadline).max(1e-9) * 1.25;
    let mut kinds: Vec<String> = rows.iter().flat_map(|a| a.shares.iter().map(|s| s.chip.clone())).collect();
    kinds.sort();
    kinds.dedup();
    let title =
        format!("fleet schedule ({:?}): makespan {:.1} days", sched.objective, sched.makespan_days).to_lowercase();
    write(dir, stem, |a| draw_gantt(a, sched, &title, end, &kinds), |a| draw_gantt(a, sched, &title, end, &kinds))
}

fn draw_gantt<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    sched: &Schedule,
    title: &str,
    end: f64,
    kinds: &[String],
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let rows = &sched.assignments;
    let n = rows.len();
    let color = |chip: &str| Palette99::pick(kinds.iter().position(|k| k == chip).unwrap_or(0));

    area.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
    let mut chart = ChartBuilder::on(area)
        .caption(title, (FONT, 24))
        .margin(20)
        .x_label_area_size(40)
        .y_label_area_size(150)
        .build_cartesian_2d(0.0..end, (0..n).into_segmented())
        .map_err(|e| anyhow!("{e}"))?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .x_desc("days")
        .y_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) => rows.get(*i).map(|a| a.job.clone()).unwrap_or_default(),
            _ => String::new(),
        })
        .label_style((FONT, 15))
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    for (i, a) in rows.iter().enumerate() {
        let h = a.shares.len();
        for (j, s) in a.shares.iter().enumerate() {
            // Several shares (heterogeneous job) split the row's height.
            let mut r = Rectangle::new(
                [(a.start_days, SegmentValue::Exact(i)), (a.end_days(), SegmentValue::Exact(i + 1))],
                color(&s.chip).filled(),
            );
            let step = 30 / h as u32;
            r.set_margin(6 + step * j as u32, 6 + step * (h - 1 - j) as u32, 0, 0);
            chart.draw_series(std::iter::once(r)).map_err(|e| anyhow!("{e}"))?;
        }
        let label: Vec<String> = a.shares.iter().map(|s| format!("{} x {}", s.count, s.chip)).collect();
        chart
            .draw_series(std::iter::once(Text::new(
                format!(" {} ({:.1} d)", label.join(" + "), a.days),
                (a.end_days(), SegmentValue::CenterOf(i)),
                (FONT, 14),
            )))
            .map_err(|e| anyhow!("{e}"))?;
        if let Some(d) = a.deadline_days {
            // The deadline: a black bar across the job's row (a job bar reaching past it is late).
            let style = BLACK.stroke_width(4);
            let bar = PathElement::new(vec![(d, SegmentValue::Exact(i)), (d, SegmentValue::Exact(i + 1))], style);
            chart.draw_series(std::iter::once(bar)).map_err(|e| anyhow!("{e}"))?;
        }
    }
    Ok(())
}

/// Write a chart as `stem.svg` and `stem.png` in `dir`, one closure per backend (the drawing
/// functions are generic over the backend; a closure cannot be, so each caller passes two).
fn write(
    dir: &Path,
    stem: &str,
    svg_draw: impl FnOnce(&DrawingArea<SVGBackend, Shift>) -> Result<()>,
    png_draw: impl FnOnce(&DrawingArea<BitMapBackend, Shift>) -> Result<()>,
) -> Result<Vec<PathBuf>> {
    register_font();
    std::fs::create_dir_all(dir).map_err(|e| anyhow!("cannot create {}: {e}", dir.display()))?;
    let svg = dir.join(format!("{stem}.svg"));
    let png = dir.join(format!("{stem}.png"));
    {
        let area = SVGBackend::new(&svg, SIZE).into_drawing_area();
        svg_draw(&area)?;
        area.present().map_err(err(&svg))?;
    }
    {
        let area = BitMapBackend::new(&png, SIZE).into_drawing_area();
        png_draw(&area)?;
        area.present().map_err(err(&png))?;
    }
    Ok(vec![svg, png])
}
