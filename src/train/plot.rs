//! The loss plot: train loss per logged step and eval loss per evaluation, as a PNG.
use std::path::Path;

use anyhow::{Context, Result};
use plotters::prelude::*;

/// DejaVu Sans Mono (free licence, assets/DejaVu-LICENSE.txt): text without system font libraries.
static FONT: &[u8] = include_bytes!("../../assets/DejaVuSansMono.ttf");

pub fn register_font() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, FONT);
    });
}

/// Reads metrics.jsonl and draws train and eval loss against the step.
pub fn loss_plot(metrics: &Path, out: &Path) -> Result<()> {
    let text = std::fs::read_to_string(metrics).with_context(|| format!("cannot read {}", metrics.display()))?;
    let (mut train, mut eval) = (Vec::new(), Vec::new());
    for line in text.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else { continue };
        let Some(step) = v["step"].as_f64() else { continue };
        if let Some(l) = v["loss"].as_f64() {
            train.push((step, l));
        }
        if let Some(l) = v["eval_loss"].as_f64() {
            eval.push((step, l));
        }
    }
    draw_lines(out, "loss", "step", &[("train loss", &train, BLUE), ("eval loss", &eval, RED)])
}

/// Line series on one chart.
pub fn draw_lines(out: &Path, title: &str, x_label: &str, series: &[(&str, &Vec<(f64, f64)>, RGBColor)]) -> Result<()> {
    register_font();
    let pts: Vec<&(f64, f64)> = series.iter().flat_map(|s| s.1.iter()).filter(|p| p.1.is_finite()).collect();
    if pts.is_empty() {
        anyhow::bail!("nothing to plot");
    }
    let x_max = pts.iter().map(|p| p.0).fold(1.0, f64::max);
    let y_max = pts.iter().map(|p| p.1).fold(f64::MIN, f64::max) * 1.05;
    let y_min = pts.iter().map(|p| p.1).fold(f64::MAX, f64::min).min(0.0);
    let tmp = out.with_extension("tmp.png");
    {
        let root = BitMapBackend::new(&tmp, (900, 540)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| anyhow::anyhow!("{e:?}"))?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 24))
            .margin(16)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(0f64..x_max, y_min..y_max)
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        chart.configure_mesh().x_desc(x_label).label_style(("sans-serif", 14)).draw().map_err(|e| anyhow::anyhow!("{e:?}"))?;
        for (name, data, color) in series {
            let color = *color;
            chart
                .draw_series(LineSeries::new(data.iter().copied(), color.stroke_width(2)))
                .map_err(|e| anyhow::anyhow!("{e:?}"))?
                .label(*name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
        }
        chart.configure_series_labels().background_style(WHITE.mix(0.8)).border_style(BLACK).label_font(("sans-serif", 14)).draw().map_err(|e| anyhow::anyhow!("{e:?}"))?;
        root.present().map_err(|e| anyhow::anyhow!("{e:?}"))?;
    }
    std::fs::rename(&tmp, out).with_context(|| format!("cannot write {}", out.display()))
}
