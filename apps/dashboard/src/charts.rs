//! Charts as server-rendered SVG through plotters' SVG backend: readable without JavaScript, with
//! a title and axis labels in text, and the data also in a table beside each chart for screen
//! readers.

use plotters::prelude::*;

const RISK: RGBColor = RGBColor(176, 32, 48);
const INK: RGBColor = RGBColor(40, 40, 40);
const MUTED: RGBColor = RGBColor(140, 140, 140);

fn svg<F>(width: u32, height: u32, draw: F) -> String
where
    F: FnOnce(DrawingArea<SVGBackend<'_>, plotters::coord::Shift>) -> Result<(), String>,
{
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (width, height)).into_drawing_area();
        if root.fill(&WHITE).is_err() || draw(root).is_err() {
            return String::new();
        }
    }
    out
}

/// A student's risk by week, with the medium and high tier bounds as dashed lines.
pub fn risk_by_week(points: &[(i64, f64)], medium: f64, high: f64) -> String {
    let last = points.iter().map(|p| p.0).max().unwrap_or(1).max(1);
    svg(640, 260, |root| {
        let mut chart = ChartBuilder::on(&root)
            .margin(12)
            .x_label_area_size(34)
            .y_label_area_size(44)
            .caption("Risk by week", ("sans-serif", 16).into_font().color(&INK))
            .build_cartesian_2d(0i64..last + 1, 0f64..1f64)
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .x_desc("as-of week")
            .y_desc("probability")
            .y_label_formatter(&|v| format!("{:.0}%", v * 100.0))
            .light_line_style(WHITE)
            .draw()
            .map_err(|e| e.to_string())?;
        for (bound, label) in [(medium, "medium"), (high, "high")] {
            chart
                .draw_series(LineSeries::new(
                    [(0, bound), (last + 1, bound)],
                    MUTED.stroke_width(1),
                ))
                .map_err(|e| e.to_string())?
                .label(label);
        }
        chart
            .draw_series(LineSeries::new(
                points.iter().copied(),
                RISK.stroke_width(2),
            ))
            .map_err(|e| e.to_string())?;
        chart
            .draw_series(points.iter().map(|p| Circle::new(*p, 3, RISK.filled())))
            .map_err(|e| e.to_string())?;
        Ok(())
    })
}

/// A curve in the unit square with its reference diagonal (perfect calibration, or chance).
fn unit_square(points: &[(f64, f64)], title: &str, x: &str, y: &str, dots: bool) -> String {
    svg(360, 320, |root| {
        let mut chart = ChartBuilder::on(&root)
            .margin(12)
            .x_label_area_size(34)
            .y_label_area_size(44)
            .caption(title, ("sans-serif", 15).into_font().color(&INK))
            .build_cartesian_2d(0f64..1f64, 0f64..1f64)
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .x_desc(x)
            .y_desc(y)
            .light_line_style(WHITE)
            .draw()
            .map_err(|e| e.to_string())?;
        chart
            .draw_series(LineSeries::new(
                [(0.0, 0.0), (1.0, 1.0)],
                MUTED.stroke_width(1),
            ))
            .map_err(|e| e.to_string())?;
        chart
            .draw_series(LineSeries::new(
                points.iter().copied(),
                RISK.stroke_width(2),
            ))
            .map_err(|e| e.to_string())?;
        if dots {
            chart
                .draw_series(points.iter().map(|p| Circle::new(*p, 3, RISK.filled())))
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    })
}

/// A reliability diagram: observed rate against mean predicted probability per bin, with the
/// diagonal of perfect calibration.
pub fn reliability(bins: &[(f64, f64)], title: &str) -> String {
    unit_square(bins, title, "predicted", "observed", true)
}

/// A ROC curve (false positive rate, true positive rate) with the chance diagonal.
pub fn roc(points: &[[f64; 2]], title: &str) -> String {
    let points: Vec<(f64, f64)> = points.iter().map(|p| (p[0], p[1])).collect();
    unit_square(
        &points,
        title,
        "false positive rate",
        "true positive rate",
        false,
    )
}

/// The share of students per tier by week, as stacked areas (high at the bottom).
pub fn tiers_by_week(weeks: &[(i64, [i64; 3])]) -> String {
    let last = weeks.iter().map(|w| w.0).max().unwrap_or(1).max(1);
    svg(640, 240, |root| {
        let mut chart = ChartBuilder::on(&root)
            .margin(12)
            .x_label_area_size(34)
            .y_label_area_size(44)
            .caption(
                "Students by tier and week",
                ("sans-serif", 15).into_font().color(&INK),
            )
            .build_cartesian_2d(0i64..last + 1, 0f64..1f64)
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .x_desc("as-of week")
            .y_desc("share")
            .y_label_formatter(&|v| format!("{:.0}%", v * 100.0))
            .light_line_style(WHITE)
            .draw()
            .map_err(|e| e.to_string())?;
        // [high, medium, low] cumulative shares.
        let share = |w: &(i64, [i64; 3]), upto: usize| {
            let total: i64 = w.1.iter().sum();
            if total == 0 {
                0.0
            } else {
                w.1[..=upto].iter().sum::<i64>() as f64 / total as f64
            }
        };
        let colours = [RISK, RGBColor(214, 140, 40), RGBColor(120, 160, 120)];
        for (k, colour) in colours.iter().enumerate().rev() {
            chart
                .draw_series(AreaSeries::new(
                    weeks.iter().map(|w| (w.0, share(w, k))),
                    0.0,
                    colour.mix(0.85),
                ))
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charts_are_svg_with_their_titles() {
        let s = risk_by_week(&[(1, 0.2), (2, 0.5), (3, 0.8)], 0.4, 0.7);
        assert!(s.starts_with("<svg") && s.contains("Risk by week"), "{s}");
        assert!(reliability(&[(0.1, 0.12), (0.5, 0.45)], "week 5").contains("week 5"));
        let r = roc(&[[0.0, 0.0], [0.2, 0.7], [1.0, 1.0]], "ROC week 10");
        assert!(r.starts_with("<svg") && r.contains("ROC week 10"));
        assert!(tiers_by_week(&[(1, [1, 2, 3]), (2, [2, 2, 2])]).starts_with("<svg"));
    }
}
