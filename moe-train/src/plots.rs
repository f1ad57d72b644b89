//! PNG plots of a run, drawn from its `metrics.jsonl` (so a resumed run plots its whole history).

use std::path::{Path, PathBuf};
use std::sync::Once;

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::{register_font, FontStyle};

use crate::error::{Result, TrainError};
use crate::metrics::{EvalRecord, LogRecord, TrainRecord};

/// DejaVu Sans Mono (Bitstream Vera licence, see assets/FONT-LICENSE): plots need no system fonts.
static FONT: &[u8] = include_bytes!("../assets/DejaVuSansMono.ttf");

fn register() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if register_font("sans-serif", FontStyle::Normal, FONT).is_err() {
            log::warn!("the embedded plot font did not load; plots will have no text");
        }
    });
}

/// Draws every plot the records allow into `dir`; returns the files written.
pub fn draw_all(dir: &Path, records: &[LogRecord], tasks: &[&str]) -> Result<Vec<PathBuf>> {
    register();
    std::fs::create_dir_all(dir).map_err(|e| TrainError::io(dir, e))?;
    let train: Vec<&TrainRecord> =
        records.iter().filter_map(|r| if let LogRecord::Train(t) = r { Some(t) } else { None }).collect();
    let evals: Vec<&EvalRecord> =
        records.iter().filter_map(|r| if let LogRecord::Eval(e) = r { Some(e) } else { None }).collect();
    let mut written = Vec::new();
    if !train.is_empty() || !evals.is_empty() {
        let path = dir.join("loss.png");
        loss_curves(&path, &train, &evals).map_err(|e| plot_error(&path, e))?;
        written.push(path);
    }
    // A dense model has no experts to plot.
    if evals.len() >= 2 && evals.iter().all(|e| !e.expert_load.is_empty()) {
        let path = dir.join("expert_load.png");
        expert_load(&path, &evals).map_err(|e| plot_error(&path, e))?;
        written.push(path);
    }
    if let Some(last) = evals.last().filter(|e| {
        e.task_expert.is_some() && !tasks.is_empty() && e.expert_load.first().is_some_and(|l| !l.is_empty())
    }) {
        let path = dir.join("task_expert_routing.png");
        routing_heatmap(&path, last, tasks).map_err(|e| plot_error(&path, e))?;
        written.push(path);
    }
    Ok(written)
}

type DrawResult = std::result::Result<(), Box<dyn std::error::Error>>;

fn plot_error(path: &Path, e: Box<dyn std::error::Error>) -> TrainError {
    TrainError::Plot { path: path.into(), reason: e.to_string() }
}

fn loss_curves(path: &Path, train: &[&TrainRecord], evals: &[&EvalRecord]) -> DrawResult {
    let root = BitMapBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE)?;
    let last_step = train.iter().map(|t| t.step).chain(evals.iter().map(|e| e.step)).max().unwrap_or(1).max(1);
    let values = train.iter().map(|t| t.lm_loss).chain(evals.iter().map(|e| e.val_loss));
    let (lo, hi) = values.fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let mut chart = ChartBuilder::on(&root)
        .caption("Loss", ("sans-serif", 26))
        .margin(16)
        .x_label_area_size(40)
        .y_label_area_size(56)
        .build_cartesian_2d(0..last_step, (lo * 0.95).max(0.0)..hi * 1.05)?;
    chart.configure_mesh().x_desc("step").y_desc("cross-entropy (nats)").draw()?;
    chart
        .draw_series(LineSeries::new(train.iter().map(|t| (t.step, t.lm_loss)), &BLUE))?
        .label("train (LM)")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], BLUE));
    chart
        .draw_series(LineSeries::new(evals.iter().map(|e| (e.step, e.val_loss)), RED.stroke_width(2)))?
        .label("validation")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], RED));
    chart.draw_series(evals.iter().map(|e| Circle::new((e.step, e.val_loss), 3, RED.filled())))?;
    chart.configure_series_labels().background_style(WHITE.mix(0.8)).border_style(BLACK).draw()?;
    root.present()?;
    Ok(())
}

fn expert_load(path: &Path, evals: &[&EvalRecord]) -> DrawResult {
    let layers = evals[0].expert_load.len();
    let experts = evals[0].expert_load.first().map_or(0, Vec::len);
    let root = BitMapBackend::new(path, (1000, (260 * layers as u32).max(300))).into_drawing_area();
    root.fill(&WHITE)?;
    // The legend gets a column of its own: inside the chart it covered the lines.
    let (plots, legend) = root.split_horizontally(860);
    let panels = plots.split_evenly((layers, 1));
    let last_step = evals.last().unwrap().step.max(1);
    let top = evals.iter().flat_map(|e| e.expert_load.iter().flatten()).copied().fold(0.0, f64::max);
    let color = |e: usize| Palette99::pick(e).to_rgba();
    for (layer, panel) in panels.iter().enumerate() {
        let mut chart = ChartBuilder::on(panel)
            .caption(format!("Layer {layer}: share of routed tokens per expert"), ("sans-serif", 18))
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(50)
            .build_cartesian_2d(0..last_step, 0.0..(top * 1.1).max(1e-3))?;
        chart.configure_mesh().x_desc("step").draw()?;
        for e in 0..experts {
            chart.draw_series(LineSeries::new(
                evals.iter().map(|r| (r.step, r.expert_load[layer][e])),
                color(e).stroke_width(2),
            ))?;
        }
        let uniform = 1.0 / experts.max(1) as f64;
        chart.draw_series(LineSeries::new([(0, uniform), (last_step, uniform)], BLACK.mix(0.4)))?;
        let dead = crate::metrics::DEAD_EXPERT_SHARE;
        chart.draw_series(LineSeries::new([(0, dead), (last_step, dead)], RED.mix(0.6)))?;
    }
    legend.draw(&Text::new("grey: uniform", (8, 20), ("sans-serif", 14)))?;
    legend.draw(&Text::new("red: 2% (dead)", (8, 40), ("sans-serif", 14)))?;
    for e in 0..experts {
        let y = 72 + 22 * e as i32;
        legend.draw(&PathElement::new([(8, y), (32, y)], color(e).stroke_width(3)))?;
        legend.draw(&Text::new(format!("expert {e}"), (38, y - 7), ("sans-serif", 14)))?;
    }
    root.present()?;
    Ok(())
}

fn routing_heatmap(path: &Path, eval: &EvalRecord, tasks: &[&str]) -> DrawResult {
    let table = eval.task_expert.as_ref().expect("checked by the caller");
    let layers = table.len();
    let n_tasks = tasks.len().min(table[0].len());
    let experts = table[0].first().map_or(0, Vec::len);
    let root = BitMapBackend::new(path, (900, (70 * n_tasks as u32 + 110) * layers as u32)).into_drawing_area();
    root.fill(&WHITE)?;
    let panels = root.split_evenly((layers, 1));
    for (layer, panel) in panels.iter().enumerate() {
        let nmi = eval.specialisation.as_ref().map_or(0.0, |s| s[layer]);
        let mut chart = ChartBuilder::on(panel)
            .caption(
                format!("Layer {layer}: task -> expert routing at step {} (NMI {nmi:.2})", eval.step),
                ("sans-serif", 18),
            )
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(110)
            // A segmented `0..n` holds n + 1 segments (both ends included), so the last index is `n - 1`.
            .build_cartesian_2d((0..experts - 1).into_segmented(), (0..n_tasks - 1).into_segmented())?;
        chart
            .configure_mesh()
            .disable_mesh()
            .x_labels(experts)
            .y_labels(n_tasks)
            .x_label_formatter(&|e| match e {
                SegmentValue::CenterOf(e) => format!("expert {e}"),
                _ => String::new(),
            })
            .y_label_formatter(&|t| match t {
                SegmentValue::CenterOf(t) => tasks.get(*t).map_or(String::new(), |s| s.to_string()),
                _ => String::new(),
            })
            .draw()?;
        for (t, row) in table[layer].iter().take(n_tasks).enumerate() {
            let total = row.iter().sum::<u64>().max(1) as f64;
            for (e, &c) in row.iter().enumerate() {
                let share = c as f64 / total;
                let shade = (255.0 * (1.0 - share.min(1.0))) as u8;
                let (x0, y0, x1, y1) = (
                    SegmentValue::Exact(e),
                    SegmentValue::Exact(t),
                    SegmentValue::Exact(e + 1),
                    SegmentValue::Exact(t + 1),
                );
                chart.draw_series(std::iter::once(Rectangle::new(
                    [(x0, y0), (x1, y1)],
                    RGBColor(shade, shade, 255).filled(),
                )))?;
                // Centred in its cell, so that it touches neither the cell's edges nor the axes.
                let style = TextStyle::from(("sans-serif", 15)).pos(Pos::new(HPos::Center, VPos::Center));
                chart.draw_series(std::iter::once(Text::new(
                    format!("{:.0}%", 100.0 * share),
                    (SegmentValue::CenterOf(e), SegmentValue::CenterOf(t)),
                    style,
                )))?;
            }
        }
    }
    root.present()?;
    Ok(())
}

/// One line of a [`LineChart`]: segments of `(x, y)` points, drawn apart.
pub type Segments = Vec<Vec<(f64, f32)>>;

/// A chart of lines, one per name, with the legend in a column of its own beside it so that it
/// covers no line (`moe-train compare` and `moe-train paths`).
pub struct LineChart<'a> {
    /// The caption.
    pub title: String,
    /// What the x axis counts.
    pub x_desc: &'a str,
    /// `(name, segments of points)`, drawn in this order; a line breaks between segments
    /// (stages whose loss is not measured on the same data in between).
    pub curves: Vec<(&'a str, Segments)>,
}

/// Draws `chart` as a PNG at `path`. Points at `x = 0` are left out when every curve has
/// others: every run starts from the same untrained loss (about ln V), which drawn squeezes the
/// differences between them into a few pixels.
pub fn draw_lines(path: &Path, chart: &LineChart) -> Result<()> {
    register();
    lines(path, chart).map_err(|e| plot_error(path, e))
}

fn lines(path: &Path, chart: &LineChart) -> DrawResult {
    let root = BitMapBackend::new(path, (1000, 560)).into_drawing_area();
    root.fill(&WHITE)?;
    let (plot, legend) = root.split_horizontally(780);
    let trained: Vec<(&str, Segments)> = chart
        .curves
        .iter()
        .map(|(name, c)| (*name, c.iter().map(|s| s.iter().copied().filter(|p| p.0 > 0.0).collect()).collect()))
        .collect();
    let curves = match trained.iter().all(|(_, c)| c.iter().any(|s| !s.is_empty())) {
        true => trained,
        false => chart.curves.clone(),
    };
    let points = curves.iter().flat_map(|(_, c)| c.iter().flatten());
    let first = points.clone().map(|p| p.0).fold(f64::INFINITY, f64::min);
    let last = points.clone().map(|p| p.0).fold(f64::NEG_INFINITY, f64::max);
    let (first, last) = if first.is_finite() { (first, last.max(first + 1e-9)) } else { (0.0, 1.0) };
    let (lo, hi) = points.fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), p| (lo.min(p.1), hi.max(p.1)));
    let (lo, hi) = if lo.is_finite() { (lo, hi) } else { (0.0, 1.0) };
    let margin = ((hi - lo) * 0.05).max(1e-3);
    let mut plotted = ChartBuilder::on(&plot)
        .caption(&chart.title, ("sans-serif", 24))
        .margin(16)
        .x_label_area_size(40)
        .y_label_area_size(56)
        .build_cartesian_2d(first..last, (lo - margin).max(0.0)..hi + margin)?;
    plotted.configure_mesh().x_desc(chart.x_desc).y_desc("cross-entropy (nats)").draw()?;
    for (i, (_, segments)) in curves.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        for segment in segments {
            plotted.draw_series(LineSeries::new(segment.iter().copied(), color.stroke_width(2)))?;
            plotted.draw_series(segment.iter().map(|&p| Circle::new(p, 3, color.filled())))?;
        }
    }
    for (i, (name, _)) in curves.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        let y = 70 + 28 * i as i32;
        legend.draw(&PathElement::new([(10, y), (40, y)], color.stroke_width(3)))?;
        legend.draw(&Text::new(name.to_string(), (48, y - 8), ("sans-serif", 16)))?;
    }
    root.present()?;
    Ok(())
}
