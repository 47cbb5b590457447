//! The SVG plots REPORT.md embeds: latency against offered load (W2 and the
//! baselines), server RSS against connections (W1), and RSS and database
//! size over a soak (W8).

use std::path::Path;

use plotters::coord::Shift;
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;

use super::Results;

/// A plotting error, which plotters gives as a `Debug`-only value.
fn drawing(e: impl std::fmt::Debug) -> anyhow::Error {
    anyhow::anyhow!("{e:?}")
}

/// A 900×560 chart with linear axes from 0 to `max`, captioned and labelled.
fn linear_chart<'a>(
    root: &DrawingArea<SVGBackend<'a>, Shift>,
    caption: &str,
    (xmax, ymax): (f64, f64),
    (x_desc, y_desc): (&str, &str),
) -> anyhow::Result<ChartContext<'a, SVGBackend<'a>, Cartesian2d<RangedCoordf64, RangedCoordf64>>> {
    let mut chart = ChartBuilder::on(root)
        .caption(caption, ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..xmax, 0f64..ymax)
        .map_err(drawing)?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .draw()
        .map_err(drawing)?;
    Ok(chart)
}

/// Draws the legend in the upper left and writes the file.
fn legend_and_save<'a, CT: CoordTranslate>(
    chart: &mut ChartContext<'a, SVGBackend<'a>, CT>,
    root: &DrawingArea<SVGBackend<'a>, Shift>,
) -> anyhow::Result<()> {
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(drawing)?;
    root.present().map_err(drawing)?;
    Ok(())
}

/// (label, points, colour) of one plotted line.
type Series = (String, Vec<(f64, f64)>, RGBColor);

/// `latency_vs_load.svg`: Sotto's e2e p50/p99/p99.9 and each baseline's p99.
pub(super) fn latency_vs_load(dir: &Path, r: &Results) -> anyhow::Result<()> {
    let Some(w2) = &r.durable_delivery else {
        return Ok(());
    };
    let path = dir.join("latency_vs_load.svg");
    let root = SVGBackend::new(&path, (900, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(drawing)?;
    let mut series: Vec<Series> = vec![
        (
            "Sotto e2e p50".into(),
            w2.steps
                .iter()
                .map(|s| (s.offered, s.figures.e2e.p50))
                .collect(),
            RGBColor(30, 90, 200),
        ),
        (
            "Sotto e2e p99".into(),
            w2.steps
                .iter()
                .map(|s| (s.offered, s.figures.e2e.p99))
                .collect(),
            RGBColor(200, 40, 40),
        ),
        (
            "Sotto e2e p99.9".into(),
            w2.steps
                .iter()
                .map(|s| (s.offered, s.figures.e2e.p999))
                .collect(),
            RGBColor(120, 0, 120),
        ),
    ];
    let colors = [
        RGBColor(0, 150, 0),
        RGBColor(230, 140, 0),
        RGBColor(90, 90, 90),
    ];
    for (b, c) in r
        .baselines
        .iter()
        .filter(|b| b.skipped.is_none())
        .zip(colors)
    {
        series.push((
            format!("{} e2e p99", b.name.split(',').next().unwrap_or("")),
            b.steps
                .iter()
                .map(|s| (s.offered, s.figures.e2e.p99))
                .collect(),
            c,
        ));
    }
    let xmax = series
        .iter()
        .flat_map(|s| s.1.iter().map(|p| p.0))
        .fold(1.0, f64::max)
        * 1.05;
    let ymax = series
        .iter()
        .flat_map(|s| s.1.iter().map(|p| p.1))
        .fold(0.1, f64::max)
        .max(1.0)
        * 1.5;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "End-to-end latency vs offered load (512 B, open loop)",
            ("sans-serif", 20),
        )
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..xmax, (0.05f64..ymax).log_scale())
        .map_err(drawing)?;
    chart
        .configure_mesh()
        .x_desc("offered msg/s")
        .y_desc("latency ms (log)")
        .draw()
        .map_err(drawing)?;
    for (name, pts, color) in series {
        let pts: Vec<(f64, f64)> = pts.into_iter().map(|(x, y)| (x, y.max(0.06))).collect();
        chart
            .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))
            .map_err(drawing)?
            .label(name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        chart
            .draw_series(pts.into_iter().map(|p| Circle::new(p, 3, color.filled())))
            .map_err(drawing)?;
    }
    legend_and_save(&mut chart, &root)
}

/// `rss_vs_connections.svg`: the W1 ramp against the T1 bar.
pub(super) fn rss_vs_connections(dir: &Path, r: &Results) -> anyhow::Result<()> {
    let Some(w1) = &r.idle_connections else {
        return Ok(());
    };
    let path = dir.join("rss_vs_connections.svg");
    let root = SVGBackend::new(&path, (900, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(drawing)?;
    let pts: Vec<(f64, f64)> = w1
        .ramp
        .iter()
        .map(|&(c, kib)| (c as f64, kib as f64 / 1024.0))
        .collect();
    let xmax = pts.iter().map(|p| p.0).fold(1.0, f64::max) * 1.05;
    let ymax = pts.iter().map(|p| p.1).fold(1.0, f64::max) * 1.2;
    let mut chart = linear_chart(
        &root,
        "sotto-server RSS vs idle authenticated connections",
        (xmax, ymax),
        ("connections", "RSS MiB"),
    )?;
    let base = w1.rss_before_kib as f64 / 1024.0;
    chart
        .draw_series(LineSeries::new(
            pts.clone(),
            RGBColor(30, 90, 200).stroke_width(2),
        ))
        .map_err(drawing)?
        .label("measured")
        .legend(|(x, y)| {
            PathElement::new(
                vec![(x, y), (x + 20, y)],
                RGBColor(30, 90, 200).stroke_width(2),
            )
        });
    chart
        .draw_series(LineSeries::new(
            vec![(0.0, base), (xmax, base + xmax * 8.0 / 1024.0)],
            RGBColor(200, 40, 40).stroke_width(1),
        ))
        .map_err(drawing)?
        .label("T1 bar: 8 KiB per connection")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RGBColor(200, 40, 40)));
    legend_and_save(&mut chart, &root)
}

/// `soak.svg`: W8's RSS and database size over time, on one chart (MiB).
pub(super) fn soak(dir: &Path, r: &Results) -> anyhow::Result<()> {
    let Some(w8) = &r.soak else {
        return Ok(());
    };
    let path = dir.join("soak.svg");
    let root = SVGBackend::new(&path, (900, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(drawing)?;
    let series: [Series; 2] = [
        (
            "server RSS".into(),
            w8.samples
                .iter()
                .map(|s| (s.t_s, s.rss_kib as f64 / 1024.0))
                .collect(),
            RGBColor(30, 90, 200),
        ),
        (
            "database files (sotto.db + WAL)".into(),
            w8.samples
                .iter()
                .map(|s| (s.t_s, s.file_bytes as f64 / 1_048_576.0))
                .collect(),
            RGBColor(200, 40, 40),
        ),
    ];
    let xmax = series
        .iter()
        .flat_map(|s| s.1.iter().map(|p| p.0))
        .fold(1.0, f64::max)
        * 1.05;
    let ymax = series
        .iter()
        .flat_map(|s| s.1.iter().map(|p| p.1))
        .fold(1.0, f64::max)
        * 1.2;
    let mut chart = linear_chart(
        &root,
        &format!("Soak: {} devices at {:.0} msg/s", w8.devices, w8.rate),
        (xmax, ymax),
        ("seconds of load", "MiB"),
    )?;
    for (name, pts, color) in series {
        chart
            .draw_series(LineSeries::new(pts, color.stroke_width(2)))
            .map_err(drawing)?
            .label(name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    legend_and_save(&mut chart, &root)
}
