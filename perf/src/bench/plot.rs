//! SVG plots of the benchmark results (plotters, SVG backend): throughput by frame size and
//! latency CDFs. One line per path, in a fixed colour per series position.

use std::path::Path;

use plotters::prelude::*;

/// One line of a plot.
#[derive(Debug, Clone)]
pub(crate) struct Series {
    /// Legend entry.
    pub(crate) name: String,
    /// (x, y) points in x order.
    pub(crate) points: Vec<(f64, f64)>,
}

const COLOURS: [RGBColor; 6] = [
    RGBColor(90, 90, 90),
    RGBColor(214, 39, 40),
    RGBColor(31, 119, 180),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(255, 127, 14),
];

fn err(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("drawing a plot: {e}")
}

/// The range of `values` widened for a log axis (never below `floor`).
fn log_range(values: impl Iterator<Item = f64>, floor: f64) -> std::ops::Range<f64> {
    let (lo, hi) = values
        .filter(|v| *v > 0.0)
        .fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if lo > hi {
        return floor..floor * 10.0;
    }
    (lo / 2.0).max(floor)..hi * 2.0
}

/// Received UDP payload rate (Mbit/s, log scale) by payload size, one line per path.
pub(crate) fn throughput_by_size(file: &Path, series: &[Series]) -> anyhow::Result<()> {
    let root = SVGBackend::new(file, (900, 540)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let y = log_range(
        series.iter().flat_map(|s| s.points.iter().map(|p| p.1)),
        0.01,
    );
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "UDP throughput by frame size, player → relay → gateway → LAN host",
            ("sans-serif", 22),
        )
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(72)
        .build_cartesian_2d(0f64..1500f64, y.log_scale())
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("UDP payload per packet (bytes)")
        .y_desc("received payload (Mbit/s, log scale)")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| format!("{y}"))
        .axis_desc_style(("sans-serif", 16))
        .label_style(("sans-serif", 14))
        .draw()
        .map_err(err)?;
    for (i, s) in series.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let points: Vec<(f64, f64)> = s.points.iter().copied().filter(|p| p.1 > 0.0).collect();
        chart
            .draw_series(LineSeries::new(points.clone(), colour.stroke_width(3)))
            .map_err(err)?
            .label(s.name.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 24, y)], colour.stroke_width(3))
            });
        chart
            .draw_series(points.iter().map(|p| Circle::new(*p, 5, colour.filled())))
            .map_err(err)?;
    }
    chart
        .configure_series_labels()
        .label_font(("sans-serif", 16))
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .position(SeriesLabelPosition::LowerRight)
        .draw()
        .map_err(err)?;
    root.present().map_err(err)?;
    Ok(())
}

/// Ping RTT CDFs (x: ms, log scale), idle on the left and under a bulk TCP flow on the right.
pub(crate) fn latency_cdf(file: &Path, idle: &[Series], load: &[Series]) -> anyhow::Result<()> {
    let root = SVGBackend::new(file, (1200, 520)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let x = log_range(
        idle.iter()
            .chain(load)
            .flat_map(|s| s.points.iter().map(|p| p.0)),
        0.001,
    );
    let (left, right) = root.split_horizontally(600);
    for (area, title, series) in [
        (&left, "ping RTT CDF, idle", idle),
        (&right, "ping RTT CDF, under a bulk TCP flow", load),
    ] {
        let mut chart = ChartBuilder::on(area)
            .caption(title, ("sans-serif", 20))
            .margin(14)
            .x_label_area_size(44)
            .y_label_area_size(56)
            .build_cartesian_2d(x.clone().log_scale(), 0f64..1f64)
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc("round-trip time (ms, log scale)")
            .y_desc("fraction of replies")
            .x_label_formatter(&|x| format!("{x}"))
            .axis_desc_style(("sans-serif", 15))
            .label_style(("sans-serif", 13))
            .draw()
            .map_err(err)?;
        for (i, s) in series.iter().enumerate() {
            let colour = COLOURS[i % COLOURS.len()];
            chart
                .draw_series(LineSeries::new(
                    s.points.iter().copied().filter(|p| p.0 > 0.0),
                    colour.stroke_width(2),
                ))
                .map_err(err)?
                .label(s.name.clone())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 24, y)], colour.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .label_font(("sans-serif", 14))
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK)
            .position(SeriesLabelPosition::LowerRight)
            .draw()
            .map_err(err)?;
    }
    root.present().map_err(err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plots_are_svg_with_every_series_named() {
        let dir = std::env::temp_dir().join(format!("lp-plot-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let series = vec![
            Series {
                name: "softlan".into(),
                points: vec![(64.0, 150.0), (512.0, 900.0), (1400.0, 2000.0)],
            },
            Series {
                name: "OpenVPN TAP".into(),
                points: vec![(64.0, 20.0), (512.0, 150.0), (1400.0, 300.0)],
            },
        ];
        let t = dir.join("t.svg");
        throughput_by_size(&t, &series).unwrap();
        let cdf = vec![Series {
            name: "direct veth".into(),
            points: vec![(0.03, 0.5), (0.05, 1.0)],
        }];
        let l = dir.join("l.svg");
        latency_cdf(&l, &cdf, &cdf).unwrap();
        for (file, names) in [
            (&t, &["softlan", "OpenVPN TAP"][..]),
            (&l, &["direct veth"]),
        ] {
            let svg = std::fs::read_to_string(file).unwrap();
            assert!(svg.starts_with("<svg"), "{svg:.80}");
            for n in names {
                assert!(svg.contains(n), "{n} missing from {}", file.display());
            }
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
