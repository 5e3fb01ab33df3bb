//! `zs bench report`: turns a folder of `--json` results into SVG charts, ours beside each
//! peer: rpc throughput and p99 latency against connections, rpc-open p99 against the
//! arrival rate, idle memory against connections, fanout deliveries against peers, bulk
//! throughput against streams.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use plotters::prelude::*;
use serde_json::Value;

/// One chart: a title, axis names and named series of (x, y) points.
struct Chart {
    file: &'static str,
    title: &'static str,
    x: &'static str,
    y: &'static str,
    log_x: bool,
    series: BTreeMap<String, Vec<(f64, f64)>>,
}

impl Chart {
    fn new(file: &'static str, title: &'static str, x: &'static str, y: &'static str, log_x: bool) -> Chart {
        Chart { file, title, x, y, log_x, series: BTreeMap::new() }
    }

    fn add(&mut self, name: &str, x: Option<f64>, y: Option<f64>) {
        if let (Some(x), Some(y)) = (x, y) {
            self.series.entry(name.to_owned()).or_default().push((x, y));
        }
    }
}

/// Reads every `*.json` in `input` and writes the charts that have data to `output`;
/// returns the files written.
pub fn run(input: &Path, output: &Path) -> Result<Vec<PathBuf>, String> {
    let mut results = Vec::new();
    let entries = std::fs::read_dir(input).map_err(|e| format!("cannot read {}: {e}", input.display()))?;
    for entry in entries {
        let path = entry.map_err(|e| e.to_string())?.path();
        if path.extension().is_some_and(|e| e == "json") {
            let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            let v: Value = serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
            results.push(v);
        }
    }
    if results.is_empty() {
        return Err(format!("no .json results in {}", input.display()));
    }
    let charts = charts(&results);
    std::fs::create_dir_all(output).map_err(|e| format!("cannot create {}: {e}", output.display()))?;
    let mut written = Vec::new();
    for mut c in charts.into_iter().filter(|c| !c.series.is_empty()) {
        for points in c.series.values_mut() {
            points.sort_by(|a, b| a.0.total_cmp(&b.0));
        }
        let path = output.join(c.file);
        draw(&c, &path).map_err(|e| format!("{}: {e}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}

fn charts(results: &[Value]) -> Vec<Chart> {
    let f = |v: &Value, path: &[&str]| path.iter().try_fold(v, |v, k| v.get(k)).and_then(Value::as_f64);
    let mut rpc = Chart::new(
        "rpc_throughput.svg",
        "rpc: calls per second (closed loop)",
        "connections",
        "calls/s",
        true,
    );
    let mut rpc_p99 =
        Chart::new("rpc_p99.svg", "rpc: p99 latency (closed loop)", "connections", "p99 µs", true);
    let mut open = Chart::new(
        "rpc_open_p99.svg",
        "rpc-open: p99 latency from the due time",
        "requests/s",
        "p99 µs",
        true,
    );
    let mut idle = Chart::new(
        "idle_memory.svg",
        "idle: server memory per connection",
        "connections held",
        "bytes per connection",
        true,
    );
    let mut fanout = Chart::new("fanout.svg", "fanout: deliveries per second", "peers", "deliveries/s", true);
    let mut bulk = Chart::new("bulk.svg", "bulk: bytes per second", "streams", "GB/s", false);
    let entries =
        [("floor", "floor"), ("ours", "ours"), ("ours (Client API)", "ours_client"), ("tarpc", "tarpc")];
    for r in results {
        match r.get("scenario").and_then(Value::as_str) {
            // Against connections: the 64-byte, plaintext runs only.
            Some("rpc")
                if r.get("secure").and_then(Value::as_str) == Some("none")
                    && f(r, &["payload"]) == Some(64.0) =>
            {
                for (name, key) in entries {
                    rpc.add(name, f(r, &["connections"]), f(r, &[key, "req_per_s"]));
                    rpc_p99.add(name, f(r, &["connections"]), f(r, &[key, "p99_us"]));
                }
            }
            Some("rpc-open") => {
                for (name, key) in entries {
                    open.add(name, f(r, &["rate"]), f(r, &[key, "p99_us"]));
                }
            }
            Some("idle") if r.get("secure").and_then(Value::as_str) == Some("none") => {
                idle.add("ours", f(r, &["held"]), f(r, &["server_rss_bytes_per_conn"]));
                idle.add("floor", f(r, &["floor_held"]), f(r, &["floor_rss_bytes_per_conn"]));
            }
            Some("fanout") => {
                for (name, key) in [("floor", "floor"), ("ours", "ours")] {
                    fanout.add(name, f(r, &["peers"]), f(r, &[key, "deliveries_per_s"]));
                }
                fanout.add("NATS", f(r, &["peers"]), f(r, &["nats", "figures", "deliveries_per_s"]));
            }
            Some("bulk") if r.get("secure").and_then(Value::as_str) == Some("none") => {
                for (name, key) in [("floor", "floor"), ("ours", "ours")] {
                    bulk.add(name, f(r, &["streams"]), f(r, &[key, "bytes_per_s"]).map(|b| b / 1e9));
                }
            }
            _ => {}
        }
    }
    vec![rpc, rpc_p99, open, idle, fanout, bulk]
}

fn draw(c: &Chart, path: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let points = c.series.values().flatten();
    let (mut x0, mut x1, mut y1) = (f64::MAX, f64::MIN, 0f64);
    for &(x, y) in points {
        (x0, x1, y1) = (x0.min(x), x1.max(x), y1.max(y));
    }
    if x0 >= x1 {
        (x0, x1) = (x0 * 0.5, x1 * 2.0 + 1.0);
    }
    let root = SVGBackend::new(path, (720, 420)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut builder = ChartBuilder::on(&root);
    builder.caption(c.title, ("sans-serif", 20)).margin(12).x_label_area_size(40).y_label_area_size(80);
    let colors = [
        RGBColor(120, 120, 120),
        RGBColor(200, 30, 30),
        RGBColor(230, 140, 20),
        RGBColor(30, 90, 200),
        RGBColor(30, 150, 60),
    ];
    let color_of = |name: &str| match name {
        "floor" => colors[0],
        "ours" => colors[1],
        "ours (Client API)" => colors[2],
        "tarpc" => colors[3],
        _ => colors[4],
    };
    macro_rules! plot {
        ($chart:expr) => {{
            let mut chart = $chart;
            chart
                .configure_mesh()
                .x_desc(c.x)
                .y_desc(c.y)
                .x_label_formatter(&|v| short(*v))
                .y_label_formatter(&|v| short(*v))
                .draw()?;
            for (name, pts) in &c.series {
                let color = color_of(name);
                chart
                    .draw_series(LineSeries::new(pts.iter().copied(), color.stroke_width(2)))?
                    .label(name.as_str())
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
                chart.draw_series(pts.iter().map(|&p| Circle::new(p, 3, color.filled())))?;
            }
            chart.configure_series_labels().background_style(WHITE.mix(0.9)).border_style(BLACK).draw()?;
        }};
    }
    if c.log_x {
        plot!(builder.build_cartesian_2d((x0.max(1e-9)..x1).log_scale(), 0f64..y1 * 1.1)?);
    } else {
        plot!(builder.build_cartesian_2d(x0..x1, 0f64..y1 * 1.1)?);
    }
    root.present()?;
    Ok(())
}

/// A number in few characters: 1.5M, 250k, 2.5, 40.
fn short(v: f64) -> String {
    match v.abs() {
        a if a >= 1e6 => format!("{:.1}M", v / 1e6),
        a if a >= 1e4 => format!("{:.0}k", v / 1e3),
        a if a >= 1e3 => format!("{:.1}k", v / 1e3),
        a if a >= 10.0 || a == 0.0 => format!("{v:.0}"),
        _ => format!("{v:.1}"),
    }
}
