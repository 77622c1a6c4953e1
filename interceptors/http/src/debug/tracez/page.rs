//! The tracez pages: HTML made on the server, SVG inline, no script. Everything
//! that came from a span (names, attribute keys and values, events, status
//! messages, service names) is escaped where it is written.

// The pages are written as HTML fragments, some ending a line: `\n` stays with
// the markup it ends rather than moving into `writeln!`.
#![allow(clippy::write_with_newline)]

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::Full;
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use tracewire::trace::{KeyValue, SpanData, SpanId, SpanKind, Status, TraceId};

use super::store::{self, KeptSpan, Row, BUCKETS, BUCKET_TITLES};
use super::{ProfileView, Tracez};
use crate::debug::render::{html_escape as esc, response};

/// How many of the slowest kept traces the summary lists.
const SLOWEST: usize = 10;

/// An HTML page that may not run scripts or load anything from elsewhere.
pub(super) fn html(body: String) -> Response<Full<Bytes>> {
    let mut r = response(
        StatusCode::OK,
        "text/html; charset=utf-8",
        body.into_bytes(),
    );
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; \
             frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
        ),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

const STYLE: &str = "\
body{font:14px/1.4 system-ui,sans-serif;margin:1.5rem;color:#222}\
h1{font-size:1.4rem;margin:0 0 .3rem}h2{font-size:1.1rem;margin:1.5rem 0 .4rem}\
table{border-collapse:collapse}td,th{padding:.2rem .6rem;border-bottom:1px solid #ddd;text-align:right}\
td.name,th.name{text-align:left;max-width:40rem;overflow-wrap:anywhere}\
th{background:#f4f4f4;font-weight:600}tr.kind-server td.name{color:#1f4e9c}\
a{color:#1a5fb4}code{font-size:.9em}.muted{color:#777}.err{color:#b00020}\
svg.waterfall text{font:12px system-ui,sans-serif}\
dl{display:grid;grid-template-columns:max-content auto;gap:.1rem .8rem;margin:.3rem 0}\
dt{color:#555}dd{margin:0;overflow-wrap:anywhere}\
section.span-detail{border-top:1px solid #ccc;padding:.4rem 0}\
section.selected{background:#fff9dc}";

fn head(title: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=en>\n<head>\n<meta charset=utf-8>\n\
         <title>{}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n",
        esc(title)
    )
}

/// A span kind as the pages and their links write it.
pub(super) fn kind(k: SpanKind) -> &'static str {
    match k {
        SpanKind::Internal => "internal",
        SpanKind::Server => "server",
        SpanKind::Client => "client",
        SpanKind::Producer => "producer",
        SpanKind::Consumer => "consumer",
    }
}

/// A query-string value.
fn q(s: &str) -> String {
    utf8_percent_encode(s, NON_ALPHANUMERIC).to_string()
}

/// A duration as people read it: `850 µs`, `12.3 ms`, `1.25 s`.
fn dur(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us < 1000.0 {
        format!("{us:.0} µs")
    } else if us < 1e6 {
        format!("{:.1} ms", us / 1e3)
    } else {
        format!("{:.2} s", us / 1e6)
    }
}

/// A wall-clock time in UTC, to the millisecond.
fn clock(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let s = d.as_secs();
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        s / 3600 % 24,
        s / 60 % 60,
        s % 60,
        d.subsec_millis()
    )
}

fn profile_line(base: &str, view: Option<&ProfileView>) -> String {
    match view {
        Some(v) => format!(
            "CPU beside the spans: from a {} profile that ended at {} UTC ({} sampled). \
             <a href=\"{base}profile?seconds=10\">Profile the next 10 s</a> to see newer spans' CPU.",
            dur(v.profile.duration()),
            clock(v.taken_at),
            dur(v.profile.total_cpu()),
        ),
        None => format!(
            "No CPU profile yet: <a href=\"{base}profile?seconds=10\">profile the next 10 s</a> \
             to see the CPU each span burned."
        ),
    }
}

/// The summary: one row per span name.
pub(super) fn summary(base: &str, tracez: &Tracez) -> String {
    let now = SystemTime::now();
    let (rows, stats, slowest, window) = {
        let store = tracez.store();
        (
            store.rows(now),
            store.stats(),
            store.slowest_roots(SLOWEST),
            store.window_minutes(),
        )
    };
    let view = tracez.profile();
    let mut h = head("tracez");
    let _ = write!(
        h,
        "<h1>tracez</h1>\n<p>Spans of this process, by name, over the last {window} min \
         (running now, ended per latency bucket, in error). A count opens its sample spans, \
         a sample its trace.</p>\n<p>{}</p>\n",
        profile_line(base, view.as_deref())
    );
    h.push_str("<table class=summary>\n<tr><th class=name>Span name<th>Kind<th>Running");
    for t in BUCKET_TITLES {
        let _ = write!(h, "<th>{t}");
    }
    h.push_str("<th>Errors</tr>\n");
    for row in &rows {
        summary_row(&mut h, base, row);
    }
    h.push_str("</table>\n");
    if rows.is_empty() {
        h.push_str("<p class=muted>No span has ended yet.</p>\n");
    }
    if stats.spans_of_other_names > 0 {
        let _ = write!(
            h,
            "<p class=muted>{} spans had names beyond the {} kept: counted here only.</p>\n",
            stats.spans_of_other_names, stats.names
        );
    }
    if !slowest.is_empty() {
        h.push_str(
            "<h2>Slowest kept traces</h2>\n<table class=slowest>\n\
             <tr><th class=name>Local root<th>Service<th>Started (UTC)<th>Duration<th>CPU</tr>\n",
        );
        for k in &slowest {
            let s = &k.span;
            let _ = writeln!(
                h,
                "<tr><td class=name><a class=trace data-cpu-ns=\"{}\" href=\"{base}trace?id={}&amp;span={}\">{}</a>\
                 <td>{}<td>{}<td>{}<td>{}</tr>",
                view.as_deref()
                    .and_then(|v| v.by_trace.get(&s.span_context.trace_id()))
                    .map_or(0, Duration::as_nanos),
                s.span_context.trace_id(),
                s.span_context.span_id(),
                esc(&s.name),
                esc(&k.service),
                clock(s.start_time),
                dur(store::duration(s)),
                cpu_of_trace(view.as_deref(), s.span_context.trace_id()),
            );
        }
        h.push_str("</table>\n");
    }
    let _ = write!(
        h,
        "<p class=muted>Kept: {} names, {} traces, {} spans, {} samples; {} traces evicted, \
         {} spans over the per-trace limit.</p>\n</body>\n</html>\n",
        stats.names,
        stats.traces,
        stats.spans,
        stats.samples,
        stats.traces_evicted,
        stats.spans_not_kept
    );
    h
}

fn summary_row(h: &mut String, base: &str, row: &Row) {
    let name = format!("{}&amp;kind={}", q(&row.name), kind(row.kind));
    let _ = write!(
        h,
        "<tr class=\"kind-{}\" data-name=\"{}\"><td class=name>{}<td>{}<td>{}",
        kind(row.kind),
        esc(&row.name),
        esc(&row.name),
        kind(row.kind),
        row.running
    );
    for b in 0..BUCKETS {
        match (row.buckets[b], row.samples[b]) {
            (0, _) => h.push_str("<td class=muted>0"),
            (n, 0) => {
                let _ = write!(h, "<td>{n}");
            }
            (n, _) => {
                let _ = write!(
                    h,
                    "<td><a class=bucket data-bucket={b} href=\"{base}spans?name={name}&amp;bucket={b}\">{n}</a>"
                );
            }
        }
    }
    match (row.errors, row.error_samples) {
        (0, _) => h.push_str("<td class=muted>0"),
        (n, 0) => {
            let _ = write!(h, "<td class=err>{n}");
        }
        (n, _) => {
            let _ = write!(
                h,
                "<td class=err><a class=errors href=\"{base}spans?name={name}&amp;errors\">{n}</a>"
            );
        }
    }
    h.push_str("</tr>\n");
}

/// The CPU `view` gives for a span or trace: `–` without a profile.
fn cpu_in(view: Option<&ProfileView>, of: impl Fn(&ProfileView) -> Option<Duration>) -> String {
    match view {
        None => "–".to_owned(),
        Some(v) => of(v).map_or("0".to_owned(), dur),
    }
}

fn cpu_of_span(view: Option<&ProfileView>, id: SpanId) -> String {
    cpu_in(view, |v| v.by_span.get(&id).copied())
}

fn cpu_of_trace(view: Option<&ProfileView>, id: TraceId) -> String {
    cpu_in(view, |v| v.by_trace.get(&id).copied())
}

/// The sample spans of a name and bucket (`None`: in error).
pub(super) fn samples(
    base: &str,
    tracez: &Tracez,
    name: &str,
    span_kind: SpanKind,
    bucket: Option<usize>,
) -> Option<String> {
    let samples = tracez.store().samples(name, span_kind, bucket)?;
    let view = tracez.profile();
    let which = match bucket {
        Some(b) => format!("latency {}", BUCKET_TITLES[b]),
        None => "in error".to_owned(),
    };
    let mut h = head(&format!("tracez: {name}"));
    let _ = write!(
        h,
        "<p><a href=\"{base}\">tracez</a></p>\n<h1>{}</h1>\n<p>The latest {} sample spans ({}), {which}.</p>\n\
         <table class=samples>\n<tr><th class=name>Trace<th>Started (UTC)<th>Duration<th>Status<th>CPU</tr>\n",
        esc(name),
        samples.len(),
        kind(span_kind),
    );
    for (s, kept) in &samples {
        let status = kept.as_ref().map_or(String::new(), |k| status(&k.span));
        if kept.is_some() {
            let _ = writeln!(
                h,
                "<tr><td class=name><a class=sample href=\"{base}trace?id={}&amp;span={}\"><code>{}</code></a>\
                 <td>{}<td>{}<td>{status}<td>{}</tr>",
                s.trace_id,
                s.span_id,
                s.trace_id,
                clock(s.start_time),
                dur(s.duration),
                cpu_of_span(view.as_deref(), s.span_id)
            );
        } else {
            let _ = writeln!(
                h,
                "<tr><td class=name><code>{}</code> <span class=muted>(trace no longer kept)</span>\
                 <td>{}<td>{}<td><td>{}</tr>",
                s.trace_id,
                clock(s.start_time),
                dur(s.duration),
                cpu_of_span(view.as_deref(), s.span_id)
            );
        }
    }
    h.push_str("</table>\n</body>\n</html>\n");
    Some(h)
}

fn status(s: &SpanData) -> String {
    match &s.status {
        Status::Unset => String::new(),
        Status::Ok => "ok".to_owned(),
        Status::Error { message } if message.is_empty() => "<span class=err>error</span>".into(),
        Status::Error { message } => format!("<span class=err>error: {}</span>", esc(message)),
    }
}

/// The spans of a trace in tree order (children after their parent, by start),
/// with their depth. Spans whose parent is not kept are roots; a cycle (ids are
/// attacker-controlled across processes) cannot loop.
fn tree(spans: &[KeptSpan]) -> Vec<(usize, &KeptSpan)> {
    let ids: HashSet<SpanId> = spans
        .iter()
        .map(|k| k.span.span_context.span_id())
        .collect();
    let mut children: HashMap<SpanId, Vec<&KeptSpan>> = HashMap::new();
    let mut roots = Vec::new();
    for k in spans {
        let parent = k.span.parent_span_id;
        if parent != SpanId::INVALID
            && ids.contains(&parent)
            && parent != k.span.span_context.span_id()
        {
            children.entry(parent).or_default().push(k);
        } else {
            roots.push(k);
        }
    }
    let by_start = |v: &mut Vec<&KeptSpan>| v.sort_by_key(|k| k.span.start_time);
    by_start(&mut roots);
    children.values_mut().for_each(by_start);
    let mut out = Vec::with_capacity(spans.len());
    let mut seen = HashSet::new();
    let mut stack: Vec<(usize, &KeptSpan)> = roots.into_iter().rev().map(|k| (0, k)).collect();
    while let Some((depth, k)) = stack.pop() {
        let id = k.span.span_context.span_id();
        if !seen.insert(id) {
            continue;
        }
        out.push((depth, k));
        if let Some(c) = children.get(&id) {
            stack.extend(c.iter().rev().map(|c| (depth + 1, *c)));
        }
    }
    // Spans only reachable through a cycle: shown as roots.
    for k in spans {
        if seen.insert(k.span.span_context.span_id()) {
            out.push((0, k));
        }
    }
    out
}

const LABEL_WIDTH: f64 = 380.0;
const BARS_WIDTH: f64 = 640.0;
/// The column of durations and CPU right of the bars.
const TIMES_WIDTH: f64 = 190.0;
const ROW: f64 = 22.0;

/// One trace: its waterfall first, then every span's details; `selected` (the
/// sample that led here) is highlighted in both.
pub(super) fn trace(
    base: &str,
    tracez: &Tracez,
    id: TraceId,
    selected: Option<SpanId>,
) -> Option<String> {
    let trace = tracez.store().trace(id)?;
    let view = tracez.profile();
    let rows = tree(&trace.spans);
    let t0 = rows.iter().map(|(_, k)| k.span.start_time).min()?;
    let t1 = rows
        .iter()
        .map(|(_, k)| k.span.end_time)
        .max()?
        .max(t0 + Duration::from_nanos(1));
    let total = t1.duration_since(t0).unwrap_or_default();
    let offset = |t: SystemTime| t.duration_since(t0).unwrap_or_default();
    let x =
        |t: SystemTime| LABEL_WIDTH + BARS_WIDTH * offset(t).as_secs_f64() / total.as_secs_f64();
    let root = rows[0].1;
    let mut h = head(&format!("tracez: trace {id}"));
    let _ = write!(
        h,
        "<p><a href=\"{base}\">tracez</a></p>\n<h1>{}</h1>\n<p>Trace <code>{id}</code>: {} spans over {} \
         (in this process), CPU {} — <a class=flamegraph-trace href=\"{base}flamegraph?tagfocus=trace_id:{id}\">\
         flame graph of the whole trace</a>.{}</p>\n",
        esc(&root.span.name),
        rows.len(),
        dur(total),
        cpu_of_trace(view.as_deref(), id),
        match trace.dropped_spans {
            0 => String::new(),
            n => format!(" {n} more spans were not kept (per-trace limit)."),
        }
    );
    if view.is_none() {
        let _ = write!(h, "<p>{}</p>\n", profile_line(base, None));
    }
    // The waterfall.
    let height = ROW * (rows.len() as f64 + 1.5);
    let width = LABEL_WIDTH + BARS_WIDTH + TIMES_WIDTH;
    let _ = write!(
        h,
        "<svg class=waterfall xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" \
         viewBox=\"0 0 {width} {height}\" role=img aria-label=\"waterfall of trace {id}\">\n"
    );
    let _ = write!(
        h,
        "<text x=\"4\" y=\"11\" fill=\"#777\">span · service</text>\
         <text x=\"{:.1}\" y=\"11\" fill=\"#777\">duration · CPU</text>\n",
        LABEL_WIDTH + BARS_WIDTH + 12.0
    );
    for i in 0..=4 {
        let fx = LABEL_WIDTH + BARS_WIDTH * f64::from(i) / 4.0;
        let _ = write!(
            h,
            "<line x1=\"{fx:.1}\" y1=\"14\" x2=\"{fx:.1}\" y2=\"{height}\" stroke=\"#e4e4e4\"/>\
             <text x=\"{fx:.1}\" y=\"11\" text-anchor=\"{}\" fill=\"#777\">{}</text>\n",
            match i {
                0 => "start",
                4 => "end",
                _ => "middle",
            },
            dur(total.mul_f64(f64::from(i) / 4.0))
        );
    }
    for (i, (depth, k)) in rows.iter().enumerate() {
        let s = &k.span;
        let y = ROW * (i as f64 + 1.0);
        let bx = x(s.start_time);
        let bw = (x(s.end_time) - bx).max(1.5);
        let color = match (&s.status, s.kind) {
            (Status::Error { .. }, _) => "#d33a3a",
            (_, SpanKind::Server) => "#3b73c4",
            (_, SpanKind::Client) => "#e0902b",
            _ => "#7a9a55",
        };
        let span_id = s.span_context.span_id();
        let label = format!("{} · {}", s.name, k.service);
        if selected == Some(span_id) {
            let _ = write!(
                h,
                "<rect class=selected x=\"0\" y=\"{:.1}\" width=\"{width}\" height=\"{ROW}\" fill=\"#fff4c2\"/>",
                y + 0.5
            );
        }
        let _ = write!(
            h,
            "<g class=span data-depth=\"{depth}\" data-span-id=\"{span_id}\" data-name=\"{}\">\
             <a href=\"#span-{span_id}\"><title>{}</title>\
             <text x=\"{:.1}\" y=\"{:.1}\">{}</text>\
             <rect x=\"{bx:.1}\" y=\"{:.1}\" width=\"{bw:.1}\" height=\"{:.1}\" rx=\"2\" fill=\"{color}\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" fill=\"#444\">{}</text></a></g>\n",
            esc(&s.name),
            esc(&format!(
                "{} ({}), {}, starts at +{}",
                s.name,
                kind(s.kind),
                dur(store::duration(s)),
                dur(offset(s.start_time))
            )),
            4.0 + 14.0 * *depth as f64,
            y + 15.0,
            esc(&truncate(&label, 52usize.saturating_sub(2 * depth))),
            y + 4.0,
            ROW - 7.0,
            LABEL_WIDTH + BARS_WIDTH + 12.0,
            y + 15.0,
            esc(&format!(
                "{}{}",
                dur(store::duration(s)),
                view.as_deref()
                    .and_then(|v| v.by_span.get(&span_id))
                    .map_or(String::new(), |c| format!(" · cpu {}", dur(*c)))
            )),
        );
    }
    h.push_str("</svg>\n<h2>Spans</h2>\n");
    for (depth, k) in &rows {
        span_detail(
            &mut h,
            base,
            tracez,
            view.as_deref(),
            *depth,
            k,
            offset(k.span.start_time),
            selected == Some(k.span.span_context.span_id()),
        );
    }
    h.push_str("</body>\n</html>\n");
    Some(h)
}

/// `s` cut to `max` characters, with an ellipsis.
fn truncate(s: &str, max: usize) -> String {
    let max = max.max(8);
    if s.chars().count() <= max {
        return s.to_owned();
    }
    let mut out: String = s.chars().take(max - 1).collect();
    out.push('…');
    out
}

fn attributes(h: &mut String, attributes: &[KeyValue]) {
    for kv in attributes {
        let _ = write!(h, "<dt>{}<dd>{}", esc(&kv.key), esc(&kv.value.to_string()));
    }
}

#[allow(clippy::too_many_arguments)]
fn span_detail(
    h: &mut String,
    base: &str,
    tracez: &Tracez,
    view: Option<&ProfileView>,
    depth: usize,
    k: &KeptSpan,
    start: Duration,
    selected: bool,
) {
    let s = &k.span;
    let span_id = s.span_context.span_id();
    let trace_id = s.span_context.trace_id();
    let _ = write!(
        h,
        "<section class=\"span-detail{}\" id=\"span-{span_id}\" data-depth=\"{depth}\">\n<h3>{}</h3>\n<dl>\
         <dt>service<dd>{}<dt>kind<dd>{}<dt>span id<dd><code>{span_id}</code>\
         <dt>parent<dd><code>{}</code>{}<dt>start<dd>+{} ({} UTC)<dt>duration<dd>{}<dt>status<dd>{}\
         <dt>CPU<dd>{}",
        if selected { " selected" } else { "" },
        esc(&s.name),
        esc(&k.service),
        kind(s.kind),
        s.parent_span_id,
        if s.parent_is_remote { " (remote)" } else { "" },
        dur(start),
        clock(s.start_time),
        dur(store::duration(s)),
        match status(s) {
            st if st.is_empty() => "unset".to_owned(),
            st => st,
        },
        cpu_of_span(view, span_id),
    );
    if view.is_some() {
        let _ = write!(
            h,
            " — <a class=flamegraph data-span-id=\"{span_id}\" data-cpu-ns=\"{}\" \
             href=\"{base}flamegraph?tagfocus=span_id:{span_id}\">flame graph of this span</a>",
            view.and_then(|v| v.by_span.get(&span_id))
                .map_or(0, Duration::as_nanos)
        );
    }
    h.push_str("<dt>scope<dd>");
    h.push_str(&esc(&s.scope));
    h.push_str("</dl>\n");
    if !s.attributes.is_empty() {
        h.push_str("<h4>Attributes</h4>\n<dl class=attributes>");
        attributes(h, &s.attributes);
        h.push_str("</dl>\n");
    }
    if s.dropped_attributes_count > 0 {
        let _ = write!(
            h,
            "<p class=muted>{} attributes dropped.</p>\n",
            s.dropped_attributes_count
        );
    }
    if !s.events.is_empty() {
        h.push_str("<h4>Events</h4>\n<dl class=events>");
        for e in &s.events {
            let at = e.timestamp.duration_since(s.start_time).unwrap_or_default();
            let _ = write!(h, "<dt>+{}<dd>{}", dur(at), esc(&e.name));
            if !e.attributes.is_empty() {
                h.push_str("<dl>");
                attributes(h, &e.attributes);
                h.push_str("</dl>");
            }
        }
        h.push_str("</dl>\n");
    }
    if !s.links.is_empty() {
        h.push_str("<h4>Links</h4>\n<dl class=links>");
        for l in &s.links {
            let linked = l.span_context.trace_id();
            let kept = linked != trace_id && tracez.store().trace(linked).is_some();
            let _ = write!(
                h,
                "<dt><code>{linked}/{}</code><dd>",
                l.span_context.span_id()
            );
            if kept {
                let _ = write!(h, "<a href=\"{base}trace?id={linked}\">open that trace</a>");
            }
            if !l.attributes.is_empty() {
                h.push_str("<dl>");
                attributes(h, &l.attributes);
                h.push_str("</dl>");
            }
        }
        h.push_str("</dl>\n");
    }
    h.push_str("</section>\n");
}
