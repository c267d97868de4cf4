//! What a run's results look like to people: `report.html`, one self-contained page per run (inline SVG
//! from plotters, no scripts, no network: the checkers' verdicts, a timeline per node (role and term)
//! with the fault windows shaded, the failover-time distribution, and a Lamport (space-time) diagram of
//! the messages of each election with their counts next to the theory), and the terminal's summary.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use plotters::prelude::*;
use synclab_core::election::NodeId;
use synclab_core::lab::check::{self, Results, Validity};
use synclab_core::lab::history::{ClockObservation, ElectionObservation, Event, Fault, MessageObservation, Role, RunInfo, SyncObservation};

/// The most elections drawn as diagrams.
const MAX_DIAGRAMS: usize = 6;

/// The whole page.
pub fn html(events: &[Event], results: &Results) -> String {
    let run = events.iter().find_map(|e| if let Event::Run(r) = e { Some(r.clone()) } else { None });
    let observations: Vec<&ElectionObservation> =
        events.iter().filter_map(|e| if let Event::Election(o) = e { Some(o) } else { None }).collect();
    let faults: Vec<&Fault> = events.iter().filter_map(|e| if let Event::Fault(f) = e { Some(f) } else { None }).collect();
    let messages: Vec<&MessageObservation> = events.iter().filter_map(|e| if let Event::Message(m) = e { Some(m) } else { None }).collect();
    let end = events
        .iter()
        .map(|e| match e {
            Event::Election(o) => o.time,
            Event::Fault(f) => f.end,
            Event::Clock(c) => c.time,
            Event::Sync(s) => s.time,
            Event::Round(r) => r.time,
            Event::Message(m) => m.time,
            Event::Run(_) | Event::Plan(_) => 0.0,
        })
        .fold(1.0, f64::max);

    let mut page = String::from(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>synclab lab report</title><style>\
         body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}\
         table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.3em .6em;text-align:left;vertical-align:top}\
         .valid{color:#1a7f37}.invalid{color:#cf222e;font-weight:bold}.unknown{color:#9a6700}\
         svg{display:block;margin:1em 0}code{background:#f4f4f4}</style></head><body>",
    );
    match &run {
        Some(r) => {
            let algorithm = if r.algorithm.is_empty() { String::new() } else { format!("{}, ", esc(&r.algorithm)) };
            let timers = if r.detector.is_empty() {
                String::new()
            } else {
                format!(", {} detector, heartbeat {:.0} ms", esc(&r.detector), r.heartbeat * 1e3)
            };
            let _ = write!(page, "<h1>{} <small>({algorithm}{}{timers}, seed {})</small></h1>", esc(&r.scenario), esc(&r.backend), r.seed);
        }
        None => page.push_str("<h1>synclab lab report</h1>"),
    }
    let _ = write!(
        page,
        "<p>Overall: {}</p><table><tr><th>checker</th><th>verdict</th><th>figures</th><th>violations</th></tr>",
        verdict(results.valid)
    );
    for (name, r) in &results.checkers {
        let figures = figures(r, " = ");
        let _ = write!(
            page,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(name),
            verdict(r.valid),
            esc(&figures.join(", ")),
            r.violations.iter().map(|v| esc(v)).collect::<Vec<_>>().join("<br>")
        );
    }
    page.push_str("</table>");

    if let Some(run) = &run
        && !run.nodes.is_empty()
    {
        page.push_str(
            "<h2>Timeline</h2><p>Each node's role over time (green: coordinator, blue: follower, orange: candidate, \
                       yellow: waiting, grey: unreachable), its term written where it changes; faults shaded from when they began \
                       to the next operation.</p>",
        );
        page.push_str(&timeline(run, &observations, &faults, end));
        page.push_str("<h2>Faults</h2><table><tr><th>start (s)</th><th>end (s)</th><th>operation</th><th>error</th></tr>");
        for f in &faults {
            let _ = write!(
                page,
                "<tr><td>{:.3}</td><td>{:.3}</td><td>{}</td><td>{}</td></tr>",
                f.start,
                f.end,
                esc(&f.op.describe()),
                esc(f.error.as_deref().unwrap_or(""))
            );
        }
        page.push_str("</table>");
        if let Some(windows) =
            results.checkers.get("election-liveness").and_then(|c| c.figures.get("degraded_windows")).and_then(|v| v.as_array())
            && !windows.is_empty()
        {
            page.push_str("<h2>Slow and lossy links</h2><table><tr><th>while</th><th>seconds</th><th>elections</th></tr>");
            for w in windows {
                let _ = write!(
                    page,
                    "<tr><td>{}</td><td>{:.1}</td><td>{}</td></tr>",
                    esc(w["after"].as_str().unwrap_or("")),
                    w["seconds"].as_f64().unwrap_or(0.0),
                    w["elections"]
                );
            }
            page.push_str("</table>");
        }
        for (figure, title) in [
            ("failover_settle_seconds", "Failover: time to settle after each fault"),
            ("return_settle_seconds", "Return: time to settle after each start, unpause or heal"),
        ] {
            let times = results.checkers.get("election-liveness").and_then(|c| c.figures.get(figure)).and_then(|v| v.as_array());
            let times: Vec<f64> = times.into_iter().flatten().filter_map(|v| v.as_f64()).collect();
            if !times.is_empty() {
                let _ = write!(page, "<h2>{title}</h2>");
                page.push_str(&distribution(&times));
            }
        }
        page.push_str("<h2>Elections</h2>");
        page.push_str(&elections(run, &observations, &messages));
    }
    let clocks: Vec<&ClockObservation> = events.iter().filter_map(|e| if let Event::Clock(c) = e { Some(c) } else { None }).collect();
    if !clocks.is_empty() {
        page.push_str(
            "<h2>Clock offsets</h2><p>How far each clock is from the group's median (true offsets, ground truth), four \
                       times a second, on a log scale so minutes and microseconds both read; the bump is shaded. Berkeley \
                       brings the clocks together, at their fault-tolerant average, not to true time.</p>",
        );
        page.push_str(&log_lines(&from_median(&clocks), &faults, end, "distance from the median"));
    }
    let syncs: Vec<&SyncObservation> = events.iter().filter_map(|e| if let Event::Sync(s) = e { Some(s) } else { None }).collect();
    if !syncs.is_empty() {
        page.push_str("<h2>Cristian syncs</h2><p>Each sync's true error (solid) under its reported bound (dashed), on a log scale; faults shaded.</p>");
        let mut series =
            group(syncs.iter().map(|s| (format!("{} |true error|", s.device), s.time, s.true_error_nanos.unsigned_abs() as f64)));
        series.extend(group(syncs.iter().map(|s| (format!("{} bound", s.device), s.time, s.error_bound_nanos as f64))));
        page.push_str(&log_lines(&series, &faults, end, "nanoseconds"));
    }
    page.push_str("</body></html>\n");
    page
}

fn verdict(v: Validity) -> &'static str {
    match v {
        Validity::Valid => "<span class=\"valid\">valid</span>",
        Validity::Invalid => "<span class=\"invalid\">invalid</span>",
        Validity::Unknown => "<span class=\"unknown\">unknown</span>",
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

fn role_color(role: Role) -> RGBColor {
    match role {
        Role::Coordinator => RGBColor(46, 160, 67),
        Role::Follower => RGBColor(84, 174, 255),
        Role::Candidate => RGBColor(251, 143, 68),
        Role::Waiting => RGBColor(212, 167, 44),
        Role::Unreachable => RGBColor(175, 184, 193),
    }
}

fn timeline(run: &RunInfo, observations: &[&ElectionObservation], faults: &[&Fault], end: f64) -> String {
    let mut svg = String::new();
    let n = run.nodes.len();
    {
        let root = SVGBackend::with_string(&mut svg, (1050, 80 + 40 * n as u32)).into_drawing_area();
        let _ = root.fill(&WHITE);
        let max_id = run.nodes.iter().copied().max().unwrap_or(1) as f64;
        let Ok(mut chart) =
            ChartBuilder::on(&root).margin(10).x_label_area_size(30).y_label_area_size(60).build_cartesian_2d(0.0..end, 0.5..max_id + 0.5)
        else {
            return svg_or_empty(String::new());
        };
        let _ = chart
            .configure_mesh()
            .disable_y_mesh()
            .y_labels(n)
            .y_label_formatter(&|y| format!("node-{}", y.round() as u64))
            .x_desc("seconds")
            .draw();
        // Faults: shaded from each operation to the next.
        for (i, f) in faults.iter().enumerate() {
            let until = faults.get(i + 1).map_or(end, |g| g.start);
            let shade = if f.op.name() == "heal" || f.op.name() == "start" || f.op.name() == "unpause" {
                RGBColor(240, 240, 240)
            } else {
                RGBColor(255, 220, 220)
            };
            let _ = chart.draw_series(std::iter::once(Rectangle::new([(f.start, 0.5), (until, max_id + 0.5)], shade.filled())));
            let _ =
                chart.draw_series(std::iter::once(Text::new(f.op.describe(), (f.start, max_id + 0.45), ("sans-serif", 11).into_font())));
        }
        for &node in &run.nodes {
            let mine: Vec<&&ElectionObservation> = observations.iter().filter(|o| o.node == node).collect();
            let y = node as f64;
            for (i, o) in mine.iter().enumerate() {
                let until = mine.get(i + 1).map_or(end, |p| p.time);
                let _ =
                    chart.draw_series(std::iter::once(Rectangle::new([(o.time, y - 0.3), (until, y + 0.3)], role_color(o.role).filled())));
                if o.role != Role::Unreachable && (i == 0 || mine[i - 1].term != o.term) {
                    let _ = chart.draw_series(std::iter::once(Text::new(
                        format!("{}", o.term),
                        (o.time, y + 0.05),
                        ("sans-serif", 10).into_font(),
                    )));
                }
            }
        }
        let _ = root.present();
    }
    svg_or_empty(svg)
}

fn svg_or_empty(svg: String) -> String {
    if svg.is_empty() { "<p>(nothing to draw)</p>".into() } else { svg }
}

fn distribution(times: &[f64]) -> String {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (700, 300)).into_drawing_area();
        let _ = root.fill(&WHITE);
        let max = times.iter().copied().fold(0.0, f64::max).max(0.01) * 1e3;
        let width = (max / 20.0).max(1.0);
        let mut buckets: BTreeMap<u64, u32> = BTreeMap::new();
        for t in times {
            *buckets.entry((t * 1e3 / width) as u64).or_default() += 1;
        }
        let top = buckets.values().copied().max().unwrap_or(1) + 1;
        let Ok(mut chart) =
            ChartBuilder::on(&root).margin(10).x_label_area_size(35).y_label_area_size(40).build_cartesian_2d(0.0..max + width, 0u32..top)
        else {
            return String::new();
        };
        let _ = chart.configure_mesh().x_desc("milliseconds until the group settled").y_desc("faults").draw();
        let _ = chart.draw_series(buckets.iter().map(|(b, c)| {
            let x = *b as f64 * width;
            Rectangle::new([(x, 0), (x + width * 0.9, *c)], RGBColor(84, 174, 255).filled())
        }));
        let _ = root.present();
    }
    svg
}

/// One section per election (a term first claimed): its Lamport diagram and message counts.
/// One claimed term as the report draws it: when and by whom it was first seen claimed, whether it was
/// already in force when its node was first observed (no election of it is in the record), and the
/// messages of its own election.
struct Claimed<'a> {
    term: u64,
    at: f64,
    coordinator: NodeId,
    in_force_at_start: bool,
    messages: Vec<&'a MessageObservation>,
}

/// The claimed terms in the order they were claimed, each with its own election's messages: the
/// election kinds sent or received after the previous claim and up to just after this one, an
/// `Election` carrying a term from the previous claim's to below this one (a candidate asks in the
/// term it knows), a `Coordinator` carrying this term. Each message belongs to one election at most, and
/// a term in force before its node was first observed has none.
fn claimed_terms<'a>(observations: &[&ElectionObservation], messages: &[&'a MessageObservation]) -> Vec<Claimed<'a>> {
    let mut first: BTreeMap<u64, (f64, NodeId)> = BTreeMap::new();
    for o in observations.iter().filter(|o| o.role == Role::Coordinator) {
        first.entry(o.term).or_insert((o.time, o.node));
    }
    let first_seen = |node: NodeId| observations.iter().filter(|o| o.node == node).map(|o| o.time).fold(f64::INFINITY, f64::min);
    let mut claims: Vec<Claimed<'a>> = first
        .into_iter()
        .map(|(term, (at, coordinator))| Claimed {
            term,
            at,
            coordinator,
            in_force_at_start: at <= first_seen(coordinator),
            messages: Vec::new(),
        })
        .collect();
    claims.sort_by(|a, b| a.at.total_cmp(&b.at).then(a.term.cmp(&b.term)));
    // The election kinds in time order: each claim looks at its own time window only (a run of 100
    // nodes records hundreds of thousands of heartbeats, and scores of claims).
    let mut electing: Vec<&'a MessageObservation> = messages
        .iter()
        .copied()
        .filter(|m| matches!(m.kind.as_str(), "Coordinator" | "RingCoordinator" | "Election" | "RingElection"))
        .collect();
    electing.sort_by(|a, b| a.time.total_cmp(&b.time));
    let mut taken = vec![false; electing.len()];
    let (mut previous_at, mut previous_term) = (f64::NEG_INFINITY, 0);
    for claim in &mut claims {
        if !claim.in_force_at_start {
            let from = (claim.at - 2.0).max(previous_at);
            let first = electing.partition_point(|m| m.time <= from);
            let last = electing.partition_point(|m| m.time <= claim.at + 0.1);
            for (i, m) in electing.iter().enumerate().take(last).skip(first) {
                let its_term = match m.kind.as_str() {
                    "Coordinator" | "RingCoordinator" => m.term == claim.term,
                    _ => previous_term <= m.term && m.term < claim.term,
                };
                if !taken[i] && its_term {
                    taken[i] = true;
                    claim.messages.push(m);
                }
            }
        }
        // A term in force before its node was first observed was claimed at some unknown time before.
        if !claim.in_force_at_start {
            previous_at = claim.at;
        }
        previous_term = previous_term.max(claim.term);
    }
    claims
}

fn elections(run: &RunInfo, observations: &[&ElectionObservation], messages: &[&MessageObservation]) -> String {
    let mut out = String::new();
    let claimed = claimed_terms(observations, messages);
    if claimed.is_empty() {
        return "<p>No coordinator was observed.</p>".into();
    }
    let n = run.nodes.len();
    let theory = if run.algorithm == "ring" {
        format!(
            "Ring, n = {n}: an election message around the ring and a coordinator message around it again, about 2n = {} sends when every node is up (each dead successor costs a failed send).",
            2 * n
        )
    } else {
        format!(
            "Bully, n = {n}: from n − 2 = {} messages (the next-highest node notices) to O(n²), about {} (the lowest notices: every node holds an election).",
            n.saturating_sub(2),
            n * (n - 1) / 2 + n.saturating_sub(1) + n.saturating_sub(2)
        )
    };
    let _ = write!(
        out,
        "<p>{}</p><p>{} terms were claimed; the first {} are drawn. The run's election messages (the first {}), with \
         vector clocks, are in <code>shiviz.log</code> beside this page, for ShiViz's (<code>https://bestchai.bitbucket.io/shiviz/</code>) \
         space-time diagrams: upload the file, or paste its log with the regular expression <code>{}</code>.</p>",
        esc(&theory),
        claimed.len(),
        claimed.len().min(MAX_DIAGRAMS),
        super::shiviz::MAX_EVENTS,
        esc(super::shiviz::REGEX)
    );
    for claim in claimed.iter().take(MAX_DIAGRAMS) {
        let (term, at, coordinator) = (claim.term, claim.at, claim.coordinator);
        if claim.in_force_at_start {
            let _ = write!(
                out,
                "<h3>Term {term}: node {coordinator} at {at:.3} s</h3><p>in force when node {coordinator} was first observed: its election is not in this run's record</p>"
            );
            continue;
        }
        let window: Vec<&&MessageObservation> = claim.messages.iter().collect();
        let mut counts: BTreeMap<&str, u32> = BTreeMap::new();
        for m in window.iter().filter(|m| m.direction == "sent") {
            *counts.entry(m.kind.as_str()).or_default() += 1;
        }
        let total: u32 = counts.values().sum();
        let counts: Vec<String> = counts.iter().map(|(k, v)| format!("{k} {v}")).collect();
        let _ = write!(
            out,
            "<h3>Term {term}: node {coordinator} at {at:.3} s</h3><p>{} messages sent ({})</p>",
            total,
            esc(&counts.join(", "))
        );
        // Drawn over the messages' own span, so a quick election is not a thin line.
        let first = window.iter().map(|m| m.time).fold(f64::INFINITY, f64::min);
        let last = window.iter().map(|m| m.time).fold(f64::NEG_INFINITY, f64::max);
        let pad = ((last - first) * 0.05).max(0.001);
        out.push_str(&lamport(run, &window, first - pad, last + pad));
    }
    out
}

/// A space-time diagram: one vertical line per node, time downwards, an arrow per delivered message
/// (a send matched to the first receipt of the same kind and term at its peer).
fn lamport(run: &RunInfo, window: &[&&MessageObservation], from: f64, to: f64) -> String {
    let sent: Vec<&&&MessageObservation> = window.iter().filter(|m| m.direction == "sent").collect();
    if sent.is_empty() {
        return "<p>(no messages recorded)</p>".into();
    }
    let max_id = run.nodes.iter().copied().max().unwrap_or(1) as f64;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (700, 420)).into_drawing_area();
        let _ = root.fill(&WHITE);
        let Ok(mut chart) = ChartBuilder::on(&root)
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(60)
            .build_cartesian_2d(0.5..max_id + 0.5, (to * 1e3)..(from * 1e3))
        else {
            return String::new();
        };
        let _ = chart
            .configure_mesh()
            .disable_mesh()
            .x_labels(run.nodes.len())
            .x_label_formatter(&|x| format!("node-{}", x.round() as u64))
            .y_desc("ms since the run began")
            .draw();
        for &n in &run.nodes {
            let x = n as f64;
            let _ = chart.draw_series(std::iter::once(PathElement::new(vec![(x, from * 1e3), (x, to * 1e3)], BLACK.mix(0.3))));
        }
        // Each send's receipt: the first unused receipt of its kind at its peer from its sender, not
        // before it (with 1 ms of slack for observers' clocks); the sends in time order, so a receipt
        // too early for one send is too early for every later one.
        let mut receipts: BTreeMap<(NodeId, NodeId, &str), (usize, Vec<&&MessageObservation>)> = BTreeMap::new();
        for r in window.iter().filter(|r| r.direction == "received") {
            receipts.entry((r.node, r.peer, r.kind.as_str())).or_default().1.push(r);
        }
        let mut sent = sent;
        sent.sort_by(|a, b| a.time.total_cmp(&b.time));
        for s in &sent {
            let receipt = receipts.get_mut(&(s.peer, s.node, s.kind.as_str())).and_then(|(next, list)| {
                while list.get(*next).is_some_and(|r| r.time < s.time - 0.001) {
                    *next += 1;
                }
                let r = list.get(*next)?;
                *next += 1;
                Some(*r)
            });
            let color = match s.kind.as_str() {
                "Coordinator" | "RingCoordinator" => RGBColor(46, 160, 67),
                "Election" | "RingElection" => RGBColor(251, 143, 68),
                _ => RGBColor(84, 174, 255),
            };
            match receipt {
                Some(r) => {
                    let _ = chart.draw_series(std::iter::once(PathElement::new(
                        vec![(s.node as f64, s.time * 1e3), (r.node as f64, r.time * 1e3)],
                        color.stroke_width(2),
                    )));
                    let _ = chart.draw_series(std::iter::once(Circle::new((r.node as f64, r.time * 1e3), 3, color.filled())));
                }
                None => {
                    // Never arrived (a dead or cut-off peer): a short stub towards it.
                    let dx = (s.peer as f64 - s.node as f64).signum() * 0.25;
                    let _ = chart.draw_series(std::iter::once(PathElement::new(
                        vec![(s.node as f64, s.time * 1e3), (s.node as f64 + dx, s.time * 1e3)],
                        RED.stroke_width(1),
                    )));
                }
            }
        }
        let _ = root.present();
    }
    svg
}

/// Each clock's distance from the median of the clocks read at the same moment.
fn from_median(clocks: &[&ClockObservation]) -> Vec<(String, Vec<(f64, f64)>)> {
    let mut points = Vec::new();
    for moment in clocks.chunk_by(|a, b| a.time == b.time) {
        let mut offsets: Vec<i64> = moment.iter().map(|c| c.true_offset_nanos).collect();
        offsets.sort_unstable();
        let median = offsets[offsets.len() / 2];
        points.extend(moment.iter().map(|c| (c.clock.clone(), c.time, (c.true_offset_nanos.saturating_sub(median)).unsigned_abs() as f64)));
    }
    group(points.into_iter())
}

/// Points grouped into named series, in the order names first appear.
fn group(points: impl Iterator<Item = (String, f64, f64)>) -> Vec<(String, Vec<(f64, f64)>)> {
    let mut series: Vec<(String, Vec<(f64, f64)>)> = Vec::new();
    for (name, t, v) in points {
        match series.iter_mut().find(|(n, _)| *n == name) {
            Some((_, s)) => s.push((t, v)),
            None => series.push((name, vec![(t, v)])),
        }
    }
    series
}

/// Lines of positive values over time on a log scale (values below 1 ns drawn at 1 ns); series whose
/// names end in "bound" dashed, in the colour of the series before them.
fn log_lines(series: &[(String, Vec<(f64, f64)>)], faults: &[&Fault], end: f64, what: &str) -> String {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (1000, 380)).into_drawing_area();
        let _ = root.fill(&WHITE);
        let top = series.iter().flat_map(|(_, s)| s.iter().map(|p| p.1)).fold(10.0, f64::max) * 2.0;
        let Ok(mut chart) = ChartBuilder::on(&root)
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(70)
            .build_cartesian_2d(0.0..end, (1.0..top).log_scale())
        else {
            return String::new();
        };
        let _ = chart
            .configure_mesh()
            .x_desc("seconds")
            .y_desc(format!("{what} (ns)"))
            .y_label_formatter(&|v| synclab_core::duration::format_nanos(*v).trim_start_matches('+').to_string())
            .draw();
        for f in faults {
            let _ = chart.draw_series(std::iter::once(Rectangle::new(
                [(f.start, 1.0), ((f.end).max(f.start + end / 200.0), top)],
                RGBColor(255, 200, 200).filled(),
            )));
        }
        let names: Vec<&str> = series.iter().map(|(n, _)| n.as_str()).filter(|n| !n.ends_with("bound")).collect();
        for (name, points) in series {
            let base = name.trim_end_matches("bound").trim_end().trim_end_matches("|true error|").trim_end();
            let i = names.iter().position(|n| n.starts_with(base)).unwrap_or(0);
            let color = crate::plot::color(i);
            let points: Vec<(f64, f64)> = points.iter().map(|&(t, v)| (t, v.max(1.0))).collect();
            let style = if name.ends_with("bound") { color.mix(0.5).stroke_width(1) } else { color.stroke_width(2) };
            if let Ok(drawn) = chart.draw_series(LineSeries::new(points, style)) {
                drawn.label(name.clone()).legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
            }
        }
        let _ = chart.configure_series_labels().background_style(WHITE.mix(0.8)).border_style(BLACK).draw();
        let _ = root.present();
    }
    svg
}

/// A summary of results, for the terminal.
pub fn summary(results: &Results) -> String {
    let mut out = String::new();
    for (name, r) in &results.checkers {
        let verdict = match r.valid {
            Validity::Valid => "valid",
            Validity::Invalid => "INVALID",
            Validity::Unknown => "unknown",
        };
        out.push_str(&format!("  {name:<18} {verdict:<8} {}\n", figures(r, "=").join(" ")));
        for v in &r.violations {
            out.push_str(&format!("      {v}\n"));
        }
        for w in r.figures.get("degraded_windows").and_then(|w| w.as_array()).into_iter().flatten() {
            let after = w["after"].as_str().unwrap_or("");
            out.push_str(&format!("      while {after}: {} elections in {:.1} s\n", w["elections"], w["seconds"].as_f64().unwrap_or(0.0)));
        }
    }
    let overall = match results.valid {
        Validity::Valid => "valid",
        Validity::Invalid => "INVALID",
        Validity::Unknown => "unknown",
    };
    out.push_str(&format!("  {:<18} {overall}\n", "overall"));
    out
}

/// A checker's single-valued figures as `name=value` (lists are left to the report's plots), fractions
/// to three decimals.
fn figures(result: &check::CheckResult, equals: &str) -> Vec<String> {
    result
        .figures
        .iter()
        .filter(|(_, v)| !v.is_array())
        .map(|(k, v)| match v.as_f64() {
            Some(f) if f.fract() != 0.0 => format!("{k}{equals}{f:.3}"),
            _ => format!("{k}{equals}{v}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(line: String) -> Event {
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line}: {e}"))
    }

    fn observed(time: f64, node: NodeId, role: &str, term: u64, coordinator: NodeId) -> Event {
        event(format!(r#"{{"type":"election","time":{time},"node":{node},"role":"{role}","term":{term},"coordinator":{coordinator}}}"#))
    }

    fn message(time: f64, node: NodeId, peer: NodeId, direction: &str, kind: &str, term: u64) -> Event {
        event(format!(
            r#"{{"type":"message","time":{time},"node":{node},"peer":{peer},"direction":"{direction}","kind":"{kind}","term":{term}}}"#
        ))
    }

    /// The `<h3>` heading of each term's diagram and the line under it.
    fn sections(page: &str) -> Vec<String> {
        page.split("<h3>").skip(1).map(|s| s.split("<svg").next().unwrap_or(s).replace("</h3>", " ")).collect()
    }

    #[test]
    fn each_diagram_holds_only_its_own_elections_messages() {
        // Node 5 was coordinator in term 49 before the run began; the lab first sees it just after its
        // kill (as a slow first poll of a container does). Nodes 1-3 elect (Election in term 49), node 4
        // wins term 53 and announces it.
        let mut events = vec![event(
            r#"{"type":"run","scenario":"kill-coordinator","seed":1,"algorithm":"bully","backend":"compose","nodes":[1,2,3,4,5]}"#.into(),
        )];
        for node in 1..=4 {
            events.push(observed(0.05, node, "follower", 49, 5));
        }
        for (from, to) in [(1, 4), (2, 4), (3, 4), (1, 3), (2, 3), (1, 2), (3, 5), (4, 5)] {
            events.push(message(0.24, from, to, "sent", "Election", 49));
        }
        events.push(observed(0.30, 5, "coordinator", 49, 5));
        for to in 1..=3 {
            events.push(message(0.263, 4, to, "sent", "Coordinator", 53));
        }
        events.push(observed(0.306, 4, "coordinator", 53, 4));
        for node in 1..=3 {
            events.push(observed(0.31, node, "follower", 53, 4));
        }
        let page = html(&events, &check::check(&events));
        let sections = sections(&page);
        let term =
            |t: u64| sections.iter().find(|s| s.starts_with(&format!("Term {t}:"))).unwrap_or_else(|| panic!("no term {t}: {sections:?}"));
        assert!(term(49).contains("in force") && !term(49).contains("messages sent"), "{}", term(49));
        assert!(term(53).contains("11 messages sent (Coordinator 3, Election 8)"), "{}", term(53));
    }
}
