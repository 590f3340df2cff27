//! Result rows and their renderings: the stdout table, Markdown, JSON and an SVG chart.

use std::fmt::Write as _;

/// What was measured about the machine, for the report header and the JSON.
#[derive(Clone, Debug, PartialEq)]
pub struct Machine {
    /// CPU model name.
    pub cpu: String,
    /// Instruction set the kernels ran on.
    pub isa: String,
    /// Threads the kernels ran on.
    pub threads: usize,
    /// Peak FMA GFLOP/s at `threads` on `isa`.
    pub peak_gflops: f64,
    /// Copy bandwidth GB/s (read + written) at `threads`.
    pub copy_gbps: f64,
}

/// One case's result.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Row {
    /// Case name.
    pub case: String,
    /// `conv` or the pooling kind.
    pub op: String,
    /// `nchw` or `nhwc`.
    pub layout: String,
    /// Algorithm label (`auto:<chosen>`, a named algorithm, or `-` for pooling).
    pub algo: String,
    /// Instruction set.
    pub isa: String,
    /// Threads.
    pub threads: usize,
    /// Median milliseconds per call.
    pub median_ms: Option<f64>,
    /// Fastest sample, milliseconds per call.
    pub min_ms: Option<f64>,
    /// `2 x MACs / median time` (convolutions).
    pub gflops: Option<f64>,
    /// Bytes moved (input read + output written) / median time (pooling).
    pub gbps: Option<f64>,
    /// GFLOP/s over the measured FMA peak (convolutions) or GB/s over the measured copy
    /// bandwidth (pooling).
    pub peak_fraction: Option<f64>,
    /// The fastest competitor from the anchors table: engine and median ms.
    pub anchor: Option<(String, f64)>,
    /// `anchor ms / our median ms` (above 1: we are faster).
    pub speedup: Option<f64>,
    /// For a backward row: its median time over the median time of the forward row of the
    /// same layer (and layout) in the same run (see [`fill_fwd_ratios`]); `None` otherwise.
    pub fwd_ratio: Option<f64>,
    /// Largest magnitude-relative error against the f64 reference.
    pub max_rel_err: Option<f64>,
    /// The bound the error is held to.
    pub err_bound: Option<f64>,
    /// True when some output exceeded the bound.
    pub over_bound: bool,
    /// The error the kernel (or its set-up) returned, if it did not run.
    pub error: Option<String>,
}

fn fmt_opt(v: Option<f64>, f: impl Fn(f64) -> String) -> String {
    v.map_or_else(|| "-".to_string(), f)
}

/// Significant-figure formatting for times and rates.
#[must_use]
pub fn sig(v: f64) -> String {
    if !v.is_finite() {
        return format!("{v}");
    }
    let a = v.abs();
    if a >= 100.0 {
        format!("{v:.1}")
    } else if a >= 10.0 {
        format!("{v:.2}")
    } else if a >= 1.0 {
        format!("{v:.3}")
    } else {
        format!("{v:.4}")
    }
}

/// The table's header cells.
pub const HEADER: [&str; 16] = [
    "case",
    "op",
    "layout",
    "algo",
    "isa",
    "thr",
    "median ms",
    "min ms",
    "GFLOP/s",
    "GB/s",
    "% peak",
    "best other (ms)",
    "speed-up",
    "vs fwd",
    "max rel err",
    "status",
];

impl Row {
    /// The row's cells in [`HEADER`] order.
    #[must_use]
    pub fn cells(&self) -> Vec<String> {
        let status = match (&self.error, self.over_bound) {
            (Some(e), _) => format!("error: {e}"),
            (None, true) => format!("FAIL: error over bound {:.1e}", self.err_bound.unwrap_or(0.0)),
            (None, false) => "ok".to_string(),
        };
        let cells = vec![
            self.case.clone(),
            self.op.clone(),
            self.layout.clone(),
            self.algo.clone(),
            self.isa.clone(),
            self.threads.to_string(),
            fmt_opt(self.median_ms, sig),
            fmt_opt(self.min_ms, sig),
            fmt_opt(self.gflops, sig),
            fmt_opt(self.gbps, sig),
            fmt_opt(self.peak_fraction, |f| format!("{:.1}%", f * 100.0)),
            self.anchor.as_ref().map_or_else(|| "-".to_string(), |(e, ms)| format!("{e} {ms:.3}")),
            fmt_opt(self.speedup, |s| format!("{s:.2}x")),
            fmt_opt(self.fwd_ratio, |r| format!("{r:.2}x")),
            fmt_opt(self.max_rel_err, |e| format!("{e:.1e}")),
            status,
        ];
        // One line per row whatever a name or message holds.
        cells.into_iter().map(|c| c.replace(|ch: char| ch.is_control(), " ")).collect()
    }
}

/// Columns that hold numbers (right-aligned).
const NUMERIC: [bool; 16] =
    [false, false, false, false, false, true, true, true, true, true, true, false, true, true, true, false];

/// Fills [`Row::fwd_ratio`] of every backward row (`op` `conv_bwd_data` or
/// `conv_bwd_filter`, case `<layer>_bwd_data` / `<layer>_bwd_filter`) that ran: its median
/// over the median of the forward row `<layer>` with the same layout, ISA and threads
/// (the `auto` row when several algorithms ran, else the fastest). Other rows get `None`.
pub fn fill_fwd_ratios(rows: &mut [Row]) {
    let ratios: Vec<Option<f64>> = rows
        .iter()
        .map(|r| {
            if r.op != crate::cases::BWD_DATA_OP && r.op != crate::cases::BWD_FILTER_OP {
                return None;
            }
            let layer = crate::cases::forward_case_name(&r.case)?;
            let ms = r.median_ms?;
            let forward: Vec<(&Row, f64)> = rows
                .iter()
                .filter(|f| {
                    f.op == "conv"
                        && f.case == layer
                        && f.layout == r.layout
                        && f.isa == r.isa
                        && f.threads == r.threads
                        && f.error.is_none()
                })
                .filter_map(|f| f.median_ms.map(|m| (f, m)))
                .collect();
            let fwd_ms = forward
                .iter()
                .find(|(f, _)| f.algo.starts_with("auto"))
                .or_else(|| forward.iter().min_by(|a, b| a.1.total_cmp(&b.1)))
                .map(|(_, m)| *m)?;
            Some(ms / fwd_ms)
        })
        .collect();
    for (r, q) in rows.iter_mut().zip(ratios) {
        r.fwd_ratio = q;
    }
}

/// A plain-text table with aligned columns.
#[must_use]
pub fn text_table(rows: &[Row]) -> String {
    let cells: Vec<Vec<String>> = rows.iter().map(Row::cells).collect();
    let mut width: Vec<usize> = HEADER.iter().map(|h| h.len()).collect();
    for r in &cells {
        for (w, c) in width.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    let line = |out: &mut String, r: &[String]| {
        let mut s = String::new();
        for (i, c) in r.iter().enumerate() {
            let pad = width[i] - c.chars().count();
            if i > 0 {
                s.push_str("  ");
            }
            if NUMERIC[i] {
                s.push_str(&" ".repeat(pad));
                s.push_str(c);
            } else {
                s.push_str(c);
                if i + 1 < r.len() {
                    s.push_str(&" ".repeat(pad));
                }
            }
        }
        out.push_str(s.trim_end());
        out.push('\n');
    };
    line(&mut out, &HEADER.map(str::to_string));
    let total: usize = width.iter().sum::<usize>() + 2 * (width.len() - 1);
    out.push_str(&"-".repeat(total.min(200)));
    out.push('\n');
    for r in &cells {
        line(&mut out, r);
    }
    out
}

/// A Markdown table (for `bench/RESULTS.md`).
#[must_use]
pub fn markdown_table(rows: &[Row]) -> String {
    let esc = |s: &str| s.replace('|', "\\|");
    let mut out = String::new();
    out.push_str(&format!("| {} |\n", HEADER.join(" | ")));
    out.push_str(&format!(
        "|{}|\n",
        NUMERIC.iter().map(|&n| if n { "---:" } else { "---" }).collect::<Vec<_>>().join("|")
    ));
    for r in rows {
        let cells: Vec<String> = r.cells().iter().map(|c| esc(c)).collect();
        out.push_str(&format!("| {} |\n", cells.join(" | ")));
    }
    out
}

/// A JSON string literal.
#[must_use]
pub fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for ch in s.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A JSON number, or `null` for `None` and non-finite values.
#[must_use]
pub fn json_number(v: Option<f64>) -> String {
    match v {
        // `{:?}` prints the shortest text that round-trips (`0.1`, `2.0`, `1e-7`): all
        // valid JSON numbers.
        Some(x) if x.is_finite() => format!("{x:?}"),
        _ => "null".to_string(),
    }
}

/// The JSON report: `{"machine": {...}, "results": [...]}`.
#[must_use]
pub fn json_report(machine: &Machine, rows: &[Row]) -> String {
    let mut out = String::new();
    out.push_str("{\n  \"machine\": {");
    let _ = write!(
        out,
        "\"cpu\": {}, \"isa\": {}, \"threads\": {}, \"peak_gflops\": {}, \"copy_gbps\": {}",
        json_string(&machine.cpu),
        json_string(&machine.isa),
        machine.threads,
        json_number(Some(machine.peak_gflops)),
        json_number(Some(machine.copy_gbps)),
    );
    out.push_str("},\n  \"results\": [");
    for (i, r) in rows.iter().enumerate() {
        out.push_str(if i == 0 { "\n    {" } else { ",\n    {" });
        let _ = write!(
            out,
            "\"case\": {}, \"op\": {}, \"layout\": {}, \"algo\": {}, \"isa\": {}, \"threads\": {}, \
             \"median_ms\": {}, \"min_ms\": {}, \"gflops\": {}, \"gbps\": {}, \"peak_fraction\": {}, \
             \"max_rel_err\": {}, \"err_bound\": {}, \"anchor_engine\": {}, \"anchor_ms\": {}, \
             \"speedup\": {}, \"fwd_ratio\": {}, \"error\": {}",
            json_string(&r.case),
            json_string(&r.op),
            json_string(&r.layout),
            json_string(&r.algo),
            json_string(&r.isa),
            r.threads,
            json_number(r.median_ms),
            json_number(r.min_ms),
            json_number(r.gflops),
            json_number(r.gbps),
            json_number(r.peak_fraction),
            json_number(r.max_rel_err),
            json_number(r.err_bound),
            r.anchor.as_ref().map_or_else(|| "null".to_string(), |(e, _)| json_string(e)),
            json_number(r.anchor.as_ref().map(|(_, ms)| *ms)),
            json_number(r.speedup),
            json_number(r.fwd_ratio),
            r.error.as_ref().map_or_else(|| "null".to_string(), |e| json_string(e)),
        );
        out.push('}');
    }
    out.push_str(if rows.is_empty() { "]\n}\n" } else { "\n  ]\n}\n" });
    out
}

fn xml(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// A horizontal bar chart of each case's fraction of the measured peak, one labelled bar
/// per case (conv bars against the FMA peak, pooling bars against copy bandwidth).
#[must_use]
pub fn svg_chart(machine: &Machine, rows: &[Row]) -> String {
    let label_w = 190.0;
    let plot_w = 560.0;
    let right = 40.0;
    let top = 64.0;
    let bar_h = 22.0;
    let gap = 8.0;
    let width = label_w + plot_w + right;
    let height = top + rows.len() as f64 * (bar_h + gap) + 44.0;
    let max_frac =
        rows.iter().filter_map(|r| r.peak_fraction).filter(|f| f.is_finite()).fold(1.0f64, f64::max);
    // Grid step: 25%, 50%, 100%, ... so that at most 8 grid lines are drawn.
    let step = [0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0]
        .into_iter()
        .find(|s| max_frac / s <= 8.0)
        .unwrap_or(max_frac / 8.0);
    let axis_max = (max_frac / step).ceil() * step;
    let x_of = |f: f64| label_w + plot_w * (f / axis_max).clamp(0.0, 1.0);
    let mut s = String::new();
    let _ = writeln!(
        s,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" \
         viewBox=\"0 0 {width} {height}\" font-family=\"sans-serif\" font-size=\"12\">"
    );
    let _ = writeln!(s, "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>");
    let _ = writeln!(
        s,
        "<text x=\"10\" y=\"20\" font-size=\"15\" font-weight=\"bold\">simdconv: fraction of this machine's measured peak</text>"
    );
    let _ = writeln!(
        s,
        "<text x=\"10\" y=\"38\" fill=\"#444\">{} | {} | {} thread(s) | FMA peak {:.1} GFLOP/s (conv, blue) | copy {:.1} GB/s (pooling, green)</text>",
        xml(&machine.cpu),
        xml(&machine.isa),
        machine.threads,
        machine.peak_gflops,
        machine.copy_gbps
    );
    // Grid lines every `step`; the 100% line in red.
    let plot_bottom = top + rows.len() as f64 * (bar_h + gap);
    let mut g = 0.0;
    while g <= axis_max + 1e-9 {
        let x = x_of(g);
        let stroke = if (g - 1.0).abs() < 1e-9 { "#900" } else { "#ddd" };
        let _ = writeln!(
            s,
            "<line x1=\"{x:.1}\" y1=\"{:.1}\" x2=\"{x:.1}\" y2=\"{plot_bottom:.1}\" stroke=\"{stroke}\"/>",
            top - 6.0
        );
        let _ = writeln!(
            s,
            "<text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\" fill=\"#666\">{:.0}%</text>",
            plot_bottom + 16.0,
            g * 100.0
        );
        g += step;
    }
    for (i, r) in rows.iter().enumerate() {
        let y = top + i as f64 * (bar_h + gap);
        let cy = y + bar_h * 0.5 + 4.0;
        let _ = writeln!(
            s,
            "<text x=\"{:.1}\" y=\"{cy:.1}\" text-anchor=\"end\">{}</text>",
            label_w - 8.0,
            xml(&r.case)
        );
        match (r.peak_fraction, &r.error) {
            (Some(f), None) if f.is_finite() => {
                let color = if r.gflops.is_some() { "#4a78c2" } else { "#4aa267" };
                let w = (x_of(f) - label_w).max(1.0);
                let _ = writeln!(
                    s,
                    "<rect x=\"{label_w:.1}\" y=\"{y:.1}\" width=\"{w:.1}\" height=\"{bar_h:.1}\" fill=\"{color}\"/>"
                );
                let rate = match (r.gflops, r.gbps) {
                    (Some(g), _) => format!("{} GFLOP/s", sig(g)),
                    (None, Some(b)) => format!("{} GB/s", sig(b)),
                    _ => String::new(),
                };
                let text = format!(
                    "{:.1}% ({rate}, {} ms){}",
                    f * 100.0,
                    sig(r.median_ms.unwrap_or(f64::NAN)),
                    if r.over_bound { " ERROR OVER BOUND" } else { "" }
                );
                // Inside the bar when it is long enough, else just after it.
                if w > 260.0 {
                    let _ = writeln!(
                        s,
                        "<text x=\"{:.1}\" y=\"{cy:.1}\" fill=\"white\">{}</text>",
                        label_w + 6.0,
                        xml(&text)
                    );
                } else {
                    let _ = writeln!(
                        s,
                        "<text x=\"{:.1}\" y=\"{cy:.1}\" fill=\"#222\">{}</text>",
                        label_w + w + 6.0,
                        xml(&text)
                    );
                }
            }
            (_, err) => {
                let text = err.as_ref().map_or_else(|| "not measured".to_string(), |e| format!("error: {e}"));
                let short: String = text.chars().take(80).collect();
                let _ = writeln!(
                    s,
                    "<text x=\"{:.1}\" y=\"{cy:.1}\" fill=\"#b00\">{}</text>",
                    label_w + 6.0,
                    xml(&short)
                );
            }
        }
    }
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn machine() -> Machine {
        Machine {
            cpu: "Test \"CPU\" \\ v1".into(),
            isa: "avx512".into(),
            threads: 1,
            peak_gflops: 160.5,
            copy_gbps: 18.25,
        }
    }

    fn rows() -> Vec<Row> {
        vec![
            Row {
                case: "vgg_conv3_2".into(),
                op: "conv".into(),
                layout: "nchw".into(),
                algo: "auto:im2col".into(),
                isa: "avx512".into(),
                threads: 1,
                median_ms: Some(25.5),
                min_ms: Some(25.0),
                gflops: Some(145.0),
                gbps: None,
                peak_fraction: Some(0.9),
                anchor: Some(("ncnn".into(), 14.012)),
                speedup: Some(14.012 / 25.5),
                fwd_ratio: None,
                max_rel_err: Some(1.5e-7),
                err_bound: Some(1.4e-4),
                over_bound: false,
                error: None,
            },
            Row {
                case: "odd\nname|x".into(),
                op: "maxpool".into(),
                layout: "nhwc".into(),
                algo: "-".into(),
                isa: "avx512".into(),
                threads: 1,
                error: Some("unsupported: \"x\"".into()),
                ..Row::default()
            },
        ]
    }

    #[test]
    fn json_has_the_documented_shape_and_parses() {
        let text = json_report(&machine(), &rows());
        let v: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
        let m = &v["machine"];
        assert_eq!(m["cpu"], "Test \"CPU\" \\ v1");
        assert_eq!(m["isa"], "avx512");
        assert_eq!(m["threads"], 1);
        assert_eq!(m["peak_gflops"], 160.5);
        assert_eq!(m["copy_gbps"], 18.25);
        let r = v["results"].as_array().unwrap();
        assert_eq!(r.len(), 2);
        for key in [
            "case",
            "op",
            "layout",
            "algo",
            "isa",
            "threads",
            "median_ms",
            "min_ms",
            "gflops",
            "gbps",
            "peak_fraction",
            "max_rel_err",
            "fwd_ratio",
        ] {
            assert!(r[0].get(key).is_some() && r[1].get(key).is_some(), "missing {key}");
        }
        assert_eq!(r[0]["case"], "vgg_conv3_2");
        assert_eq!(r[0]["median_ms"], 25.5);
        assert_eq!(r[0]["gbps"], serde_json::Value::Null);
        assert_eq!(r[0]["max_rel_err"], 1.5e-7);
        assert_eq!(r[0]["anchor_engine"], "ncnn");
        assert_eq!(r[1]["case"], "odd\nname|x");
        assert_eq!(r[1]["median_ms"], serde_json::Value::Null);
        assert_eq!(r[1]["error"], "unsupported: \"x\"");
        // An empty run is still valid JSON.
        let empty: serde_json::Value = serde_json::from_str(&json_report(&machine(), &[])).unwrap();
        assert_eq!(empty["results"].as_array().unwrap().len(), 0);
    }

    #[test]
    fn json_numbers_and_strings() {
        assert_eq!(json_number(None), "null");
        assert_eq!(json_number(Some(f64::NAN)), "null");
        assert_eq!(json_number(Some(f64::INFINITY)), "null");
        assert_eq!(json_number(Some(2.0)), "2.0");
        assert_eq!(json_number(Some(1e-7)), "1e-7");
        assert_eq!(json_string("a\u{1}b\t"), "\"a\\u0001b\\t\"");
        for v in [1e-7, 0.1, 123456.789, 1e300, -2.5e-320] {
            let back: f64 = serde_json::from_str(&json_number(Some(v))).unwrap();
            assert_eq!(back, v);
        }
    }

    #[test]
    fn tables_have_one_line_per_row() {
        let t = text_table(&rows());
        assert_eq!(t.lines().count(), 4);
        assert!(t.lines().next().unwrap().starts_with("case"));
        assert!(t.contains("90.0%") && t.contains("ncnn 14.012") && t.contains("0.55x"));
        assert!(t.contains("error: unsupported"));
        let m = markdown_table(&rows());
        assert_eq!(m.lines().count(), 4);
        assert!(m.contains("| odd name\\|x |"));
    }

    #[test]
    fn backward_rows_get_their_forward_ratio() {
        let fwd = rows().remove(0);
        let bwd = |case: &str, op: &str, ms: f64| Row {
            case: case.into(),
            op: op.into(),
            algo: "auto:gemm".into(),
            median_ms: Some(ms),
            anchor: None,
            speedup: None,
            ..fwd.clone()
        };
        let mut other_layout = bwd("vgg_conv3_2_bwd_data", "conv_bwd_data", 30.0);
        other_layout.layout = "nhwc".into();
        let mut rs = vec![
            fwd.clone(),
            bwd("vgg_conv3_2_bwd_data", "conv_bwd_data", 38.25),
            bwd("vgg_conv3_2_bwd_filter", "conv_bwd_filter", 51.0),
            bwd("resnet_1x1_reduce_bwd_data", "conv_bwd_data", 1.0),
            other_layout,
        ];
        fill_fwd_ratios(&mut rs);
        let got: Vec<Option<f64>> = rs.iter().map(|r| r.fwd_ratio).collect();
        assert_eq!(got, [None, Some(1.5), Some(2.0), None, None]);
        let t = text_table(&rs);
        assert!(t.lines().next().unwrap().contains("vs fwd"));
        assert!(t.contains("1.50x") && t.contains("2.00x"), "{t}");
        let v: serde_json::Value = serde_json::from_str(&json_report(&machine(), &rs)).unwrap();
        assert_eq!(v["results"][1]["fwd_ratio"], 1.5);
        assert_eq!(v["results"][1]["op"], "conv_bwd_data");
        assert_eq!(v["results"][0]["fwd_ratio"], serde_json::Value::Null);
        assert_eq!(v["results"][1]["anchor_engine"], serde_json::Value::Null);
    }

    #[test]
    fn svg_labels_every_case() {
        let s = svg_chart(&machine(), &rows());
        assert!(s.starts_with("<svg") && s.trim_end().ends_with("</svg>"));
        assert!(s.contains(">vgg_conv3_2<") && s.contains("90.0% (145.0 GFLOP/s"));
        assert!(s.contains("error: unsupported: &quot;x&quot;"));
        assert!(s.contains("Test &quot;CPU&quot;"));
    }
}
