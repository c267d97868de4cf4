//! The dashboard's page and its parts: charts from [`crate::plot`], tables as escaped HTML, sent as one
//! JSON object (`{"coordinator", "term", "parts": {element id: HTML}}`) that the page's script puts in
//! place.

use std::fmt::Write as _;

use super::observed::{Failover, Observed, agreed};
use crate::plot::{Chart, Series, css_color, lines, stacked_bars};
use crate::proto::election::Role;

/// The page: HTML, CSS and the script that applies each update, all in the binary.
pub const PAGE: &str = include_str!("page.html");

/// `text` safe inside HTML (element text and quoted attributes).
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

/// A label for a chart's legend: what the network sent, kept to safe characters and 24 of them.
fn label(text: &str) -> String {
    text.chars().filter(|c| c.is_ascii_alphanumeric() || "-_. ".contains(*c)).take(24).collect()
}

/// A duration in seconds, in the unit that reads best (e.g. 3.20 s, 412 µs).
pub fn human(seconds: f64) -> String {
    let a = seconds.abs();
    let (v, unit) = if a >= 1.0 {
        (seconds, "s")
    } else if a >= 1e-3 {
        (seconds * 1e3, "ms")
    } else if a >= 1e-6 {
        (seconds * 1e6, "µs")
    } else {
        (seconds * 1e9, "ns")
    };
    format!("{v:+.3} {unit}")
}

/// The page's parts now (`now`: seconds since the dashboard started).
pub(super) fn render(o: &Observed, now: f64) -> String {
    let mut parts = serde_json::Map::new();
    let mut put = |id: &str, html: String| {
        parts.insert(id.to_string(), serde_json::Value::String(html));
    };
    put("clocks", clocks_chart(o, now));
    put("clock-table", clock_table(o));
    put("syncs", syncs_table(o, now));
    put("round", round_table(o));
    put("spread", spread_chart(o));
    put("corrections", corrections_chart(o));
    put("nodes", node_grid(o));
    put("timeline", timeline_chart(o, now));
    put("phases", phases_chart(o));
    put("failovers", failover_table(o));
    let (coordinator, term) = agreed(o).map_or((serde_json::Value::Null, serde_json::Value::Null), |(c, t)| (c.into(), t.into()));
    serde_json::json!({ "coordinator": coordinator, "term": term, "parts": parts }).to_string()
}

/// Smallest and largest |offset| the log axis shows: 100 ns to 1000 s.
const LOG_MIN: f64 = 1e-7;
const LOG_MAX: f64 = 1e3;

fn clocks_chart(o: &Observed, now: f64) -> String {
    let series: Vec<Series> = o
        .order
        .iter()
        .filter_map(|name| {
            let track = o.clocks.get(name)?;
            let points: Vec<(f64, f64)> = track.offsets.iter().map(|(t, v)| (t - now, v.abs())).collect();
            // A device's band: its last sync's error bound around its offset.
            let band = track
                .offsets
                .iter()
                .filter_map(|(t, v)| {
                    let i = track.bounds.partition_point(|b| b.0 <= *t);
                    let bound = track.bounds.get(i.checked_sub(1)?)?.1;
                    Some((t - now, (v.abs() - bound).max(LOG_MIN), v.abs() + bound))
                })
                .collect();
            Some(Series { name: label(name), points, band })
        })
        .collect();
    lines(
        &Chart::new("Every clock's true offset |clock − true time|", "seconds ago", "|offset| (s, log)")
            .log(LOG_MIN, LOG_MAX)
            .size(900, 340),
        &series,
    )
}

fn clock_table(o: &Observed) -> String {
    let mut html = String::from("<table><tr><th>clock</th><th>address</th><th>true offset</th><th>error bound</th></tr>");
    for (i, name) in o.order.iter().enumerate() {
        let Some(t) = o.clocks.get(name) else { continue };
        let offset = t.offsets.back().filter(|_| t.reachable).map_or("unreachable".to_string(), |p| human(p.1));
        let bound = t.bounds.back().map_or(String::new(), |b| format!("±{}", human(b.1).trim_start_matches('+')));
        let _ = write!(
            html,
            "<tr><td><span class=\"swatch\" style=\"background:{}\"></span>{}</td><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
            css_color(i),
            escape(name),
            escape(&t.addr),
            offset,
            bound
        );
    }
    html.push_str("</table>");
    html
}

fn syncs_table(o: &Observed, now: f64) -> String {
    if o.syncs.is_empty() {
        return "<p class=\"muted\">no sync seen yet</p>".into();
    }
    let mut html = String::from("<table><tr><th>when</th><th>device synced</th><th>disagreement before</th><th>after</th></tr>");
    for s in o.syncs.iter().rev().take(8) {
        let _ = write!(
            html,
            "<tr><td>{:.0} s ago</td><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
            now - s.at,
            escape(&s.device),
            human(s.before).trim_start_matches('+'),
            human(s.after).trim_start_matches('+')
        );
    }
    html.push_str("</table>");
    html
}

fn round_table(o: &Observed) -> String {
    let Some(round) = o.rounds.back() else {
        let why = if o.master_reachable { "no round yet" } else { "the master is not reachable" };
        return format!("<p class=\"muted\">{why}</p>");
    };
    let mut html = format!(
        "<p>round <b data-round=\"{}\">{}</b>: average {} from the master, took {:.1} ms; master {}</p>",
        round.number,
        round.number,
        human(round.average_nanos as f64 / 1e9),
        round.duration_nanos as f64 / 1e6,
        if round.master_included { "included" } else { "<b>excluded</b>" }
    );
    html.push_str("<table><tr><th>line</th><th>measured offset</th><th>correction</th><th>in the average</th></tr>");
    let _ = write!(
        html,
        "<tr><td>master</td><td class=\"num\">0</td><td class=\"num\">{}</td><td>{}</td></tr>",
        human(round.master_adjustment_nanos as f64 / 1e9),
        if round.master_included { "yes" } else { "excluded" }
    );
    for m in &round.members {
        let average = match (m.answered, m.excluded) {
            (false, _) => format!("no answer {}", escape(&m.reason)),
            (true, true) => format!("<b class=\"excluded\">excluded</b> {}", escape(&m.reason)),
            (true, false) => "yes".into(),
        };
        let _ = write!(
            html,
            "<tr><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td>{}</td></tr>",
            escape(&m.name),
            if m.answered { human(m.offset_nanos as f64 / 1e9) } else { "-".into() },
            if m.answered { human(m.adjustment_nanos as f64 / 1e9) } else { "-".into() },
            average
        );
    }
    html.push_str("</table><p class=\"muted\">excluded in the last rounds: ");
    let recent: Vec<String> = o
        .rounds
        .iter()
        .rev()
        .take(10)
        .map(|r| {
            let out: Vec<String> = r.members.iter().filter(|m| m.excluded).map(|m| escape(&m.name)).collect();
            format!("#{} {}", r.number, if out.is_empty() { "none".into() } else { out.join(", ") })
        })
        .collect();
    html.push_str(&recent.join(" · "));
    html.push_str("</p><p id=\"exclusions\">left out of the average so far: ");
    let so_far: Vec<String> = o
        .exclusions
        .iter()
        .map(|(name, (first, last, n))| format!("<b class=\"excluded\">{}</b> in rounds {first}–{last} ({n} rounds)", escape(name)))
        .collect();
    html.push_str(&if so_far.is_empty() { "nobody".to_string() } else { so_far.join(", ") });
    html.push_str("</p>");
    html
}

/// The spread of a round: max − min of the answering clocks' measured offsets, the master's (0) too.
fn round_spread(round: &crate::proto::berkeley::Round) -> f64 {
    let offsets = round.members.iter().filter(|m| m.answered).map(|m| m.offset_nanos).chain([0]);
    let (lo, hi) = offsets.fold((i64::MAX, i64::MIN), |(lo, hi), o| (lo.min(o), hi.max(o)));
    hi.saturating_sub(lo) as f64 / 1e9
}

fn spread_chart(o: &Observed) -> String {
    let points = o.rounds.iter().map(|r| (r.number as f64, round_spread(r).max(LOG_MIN))).collect();
    lines(
        &Chart::new("Group spread per round", "round", "spread (s, log)").log(LOG_MIN, LOG_MAX).size(440, 260),
        &[Series::new("spread", points)],
    )
}

fn corrections_chart(o: &Observed) -> String {
    let mut names: Vec<String> = o.rounds.iter().flat_map(|r| r.members.iter().map(|m| m.name.clone())).collect();
    names.sort();
    names.dedup();
    names.truncate(8);
    let mut series =
        vec![Series::new("master", o.rounds.iter().map(|r| (r.number as f64, (r.master_adjustment_nanos as f64 / 1e9).abs())).collect())];
    series.extend(names.iter().map(|name| {
        let points = o
            .rounds
            .iter()
            .filter_map(|r| {
                r.members.iter().find(|m| &m.name == name && m.answered).map(|m| (r.number as f64, (m.adjustment_nanos as f64 / 1e9).abs()))
            })
            .collect();
        Series::new(label(name), points)
    }));
    lines(&Chart::new("Each line's correction per round", "round", "|correction| (s, log)").log(LOG_MIN, LOG_MAX).size(440, 260), &series)
}

/// A role as the grid names it (`follower`, `coordinator`...).
fn role_name(role: i32) -> String {
    Role::try_from(role).map_or("?".into(), |r| r.as_str_name().trim_start_matches("ROLE_").to_ascii_lowercase())
}

fn node_grid(o: &Observed) -> String {
    let mut html = String::new();
    for n in &o.nodes {
        match (&n.state, n.reachable) {
            (Some(s), true) => {
                let _ = write!(
                    html,
                    "<div class=\"node {role}\" data-id=\"{id}\" data-role=\"{role}\" data-term=\"{term}\" data-coordinator=\"{c}\" data-availability=\"{a:.4}\" data-leader-changes=\"{changes}\"><b>node {id}</b><span>{role}</span><span>term {term}</span><span>coordinator {c}</span><span title=\"the share of the last 60 s this node had a coordinator, as it sees it\">available {pct:.1}%</span><span>{changes} leader changes</span><small>{addr}</small></div>",
                    role = role_name(s.role),
                    id = s.id,
                    term = s.term,
                    c = if s.coordinator > 0 { s.coordinator.to_string() } else { "-".into() },
                    a = s.availability,
                    pct = s.availability * 100.0,
                    changes = s.leader_changes,
                    addr = escape(&n.addr)
                );
            }
            (state, _) => {
                let id = state.as_ref().map_or("?".to_string(), |s| s.id.to_string());
                let _ = write!(
                    html,
                    "<div class=\"node down\" data-id=\"{id}\" data-role=\"unreachable\"><b>node {id}</b><span>unreachable</span><small>{}</small></div>",
                    escape(&n.addr)
                );
            }
        }
    }
    html
}

fn timeline_chart(o: &Observed, now: f64) -> String {
    let mut points = Vec::new();
    let reigns: Vec<_> = o.reigns.iter().collect();
    for (i, r) in reigns.iter().enumerate() {
        let until = reigns.get(i + 1).map_or(now, |next| next.from);
        points.push((r.from - now, r.coordinator as f64));
        points.push((until - now, r.coordinator as f64));
    }
    lines(&Chart::new("Coordinator over time", "seconds ago", "coordinator id").size(440, 240), &[Series::new("coordinator", points)])
}

fn phases_chart(o: &Observed) -> String {
    let labels: Vec<String> = o.failovers.iter().map(|f| format!("t{}", f.term)).collect();
    let part = |f: fn(&Failover) -> Option<f64>| o.failovers.iter().map(|x| f(x).unwrap_or(0.0)).collect::<Vec<f64>>();
    let parts = vec![
        ("detection".to_string(), part(|f| f.detection_ms)),
        ("election".to_string(), part(|f| f.election_ms)),
        ("announcement".to_string(), part(|f| f.announcement_ms)),
    ];
    stacked_bars(&Chart::new("Each failover's phases", "term", "ms").size(440, 240), &labels, &parts)
}

/// The textbook's message counts for one election among `n` live nodes: (best, worst).
pub fn theory(algorithm: &str, n: usize) -> (usize, usize) {
    let n = n.max(1);
    match algorithm {
        // Ring: the election message once around and the coordinator once around (2n); if every node
        // starts one, n elections of n hops each and n announcements (n² + n).
        "ring" => (2 * n, n * n + n),
        // Bully: the next-highest notices: its Election to the dead one, then Coordinator to the n − 1
        // others (n); the lowest notices: Elections from each node to all above it, their OKs, and the
        // announcement (about n²).
        _ => (n, n * (n - 1) + n - 1),
    }
}

fn failover_table(o: &Observed) -> String {
    if o.failovers.is_empty() {
        return "<p class=\"muted\">no failover seen yet: <code>docker kill</code> the coordinator</p>".into();
    }
    let ms = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.1}"));
    let mut html = String::from(
        "<table><tr><th>term</th><th>new coordinator</th><th>why</th><th>detection ms</th><th>election ms</th><th>announcement ms</th><th>messages</th><th>textbook (best…worst)</th></tr>",
    );
    for f in o.failovers.iter().rev().take(8) {
        let (best, worst) = theory(&o.algorithm, f.live);
        let _ = write!(
            html,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td>{} {best}…{worst} (n = {})</td></tr>",
            f.term,
            f.coordinator,
            escape(&f.reason),
            ms(f.detection_ms),
            ms(f.election_ms),
            ms(f.announcement_ms),
            f.messages,
            escape(&o.algorithm),
            f.live
        );
    }
    html.push_str("</table>");
    html
}

#[cfg(test)]
mod tests {
    use super::super::observed::NodeView;
    use super::*;
    use crate::proto::election::NodeState;

    #[test]
    fn what_the_network_sends_is_escaped() {
        assert_eq!(escape("<script>alert('x')</script>&\""), "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&amp;&quot;");
        assert_eq!(label("<b>KMC</b>\u{0}"), "bKMCb");
    }

    #[test]
    fn durations_read_in_their_unit() {
        assert_eq!(human(3.2), "+3.200 s");
        assert_eq!(human(-0.000412), "-412.000 µs");
        assert_eq!(human(2.5e-3), "+2.500 ms");
    }

    /// Pins that each node's card shows its own availability over the last minute and its leader
    /// changes, as its metrics do.
    #[test]
    fn each_node_shows_its_availability_and_leader_changes() {
        let state = NodeState {
            id: 3,
            role: Role::Follower as i32,
            term: 7,
            coordinator: 5,
            leader_changes: 4,
            availability: 0.9876,
            ..Default::default()
        };
        let o = Observed {
            nodes: vec![NodeView { addr: "n3".into(), state: Some(state), reachable: true, last_seen: None }],
            ..Default::default()
        };
        let html = node_grid(&o);
        assert!(html.contains("available 98.8%"), "{html}");
        assert!(html.contains("4 leader changes"), "{html}");
        assert!(html.contains("data-availability=\"0.9876\""), "{html}");
    }

    #[test]
    fn the_textbook_counts_grow_with_n() {
        assert_eq!(theory("bully", 4), (4, 15));
        assert_eq!(theory("ring", 4), (8, 20));
    }
}
