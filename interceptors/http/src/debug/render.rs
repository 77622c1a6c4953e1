//! The response bodies: the HTML index, pprof downloads, the flame graph, and text
//! errors.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt::Write as _;

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::Full;
use tracewire::profile::{custom_profiles, CustomProfile, Profile, Sample};

use super::query::{self, CpuRequest};

/// A response with `body` and the given content type, not to be sniffed.
pub(crate) fn response(
    status: StatusCode,
    content_type: &'static str,
    body: Vec<u8>,
) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

/// A plain-text answer, for errors.
pub(crate) fn text(status: StatusCode, message: String) -> Response<Full<Bytes>> {
    response(status, "text/plain; charset=utf-8", message.into_bytes())
}

/// A pprof download named `name` (Go's `Content-Disposition`).
fn pprof_download(
    name: &str,
    write: impl FnOnce(&mut Vec<u8>) -> std::io::Result<()>,
) -> Response<Full<Bytes>> {
    let mut body = Vec::new();
    if let Err(e) = write(&mut body) {
        return text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot encode the profile: {e}\n"),
        );
    }
    let mut response = response(StatusCode::OK, "application/octet-stream", body);
    // Names may hold any character but '/': keep the safe ones for the file name.
    let file: String = name
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        .collect();
    let file = if file.is_empty() { "profile" } else { &file };
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{file}\"")) {
        response
            .headers_mut()
            .insert(header::CONTENT_DISPOSITION, v);
    }
    response
}

/// A CPU profile as gzip'd pprof.
pub(crate) fn cpu(profile: &Profile) -> Response<Full<Bytes>> {
    pprof_download("profile", |out| profile.write_pprof(out))
}

/// A heap profile as gzip'd pprof, `default` shown first.
pub(crate) fn heap(
    profile: &tracewire::alloc::HeapProfile,
    default: tracewire::alloc::SampleType,
) -> Response<Full<Bytes>> {
    let name = match default {
        tracewire::alloc::SampleType::InuseSpace => "heap",
        _ => "allocs",
    };
    pprof_download(name, |out| profile.to_pprof(default).write_gzip(out))
}

/// A custom profile as gzip'd pprof.
pub(crate) fn custom(profile: &CustomProfile) -> Response<Full<Bytes>> {
    pprof_download(profile.name(), |out| profile.write_pprof(out))
}

/// Escapes text for HTML content and quoted attributes. Control characters (but
/// tab and newline), which HTML does not allow, are shown as `\u{..}`.
pub(crate) fn html_escape(s: &str) -> Cow<'_, str> {
    let special = |c: char| {
        matches!(c, '&' | '<' | '>' | '"' | '\'') || c.is_control() && !matches!(c, '\t' | '\n')
    };
    if !s.contains(special) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if special(c) => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// The HTML index: every profile with its count and a link, as Go's.
pub(crate) fn index(prefix: &str, default_seconds: u64) -> Response<Full<Bytes>> {
    let title = html_escape(prefix);
    let mut html = format!(
        "<html>\n<head>\n<title>{title}/</title>\n<style>\n\
         .profile-name{{display:inline-block; width:8rem;}}\n\
         </style>\n</head>\n<body>\n{title}/<br>\n<br>\n\
         Types of profiles available:\n<table>\n\
         <thead><td>Count</td><td>Profile</td></thead>\n"
    );
    let customs = custom_profiles();
    let mut rows: Vec<(String, &str, String)> = vec![
        (
            String::new(),
            "profile",
            format!("profile?seconds={default_seconds}"),
        ),
        (
            String::new(),
            "flamegraph",
            format!("flamegraph?seconds={default_seconds}"),
        ),
    ];
    let heap = tracewire::alloc::is_installed();
    let live = tracewire::alloc::stats().live_samples.to_string();
    if heap {
        rows.push((String::new(), "allocs", "allocs".to_owned()));
        rows.push((live, "heap", "heap".to_owned()));
    }
    rows.extend(
        customs
            .iter()
            .map(|p| (p.count().to_string(), p.name(), query::encode(p.name()))),
    );
    for (count, name, href) in rows {
        let _ = writeln!(
            html,
            "<tr><td>{count}</td><td><a href=\"{}\">{}</a></td></tr>",
            html_escape(&href),
            html_escape(name)
        );
    }
    html.push_str(
        "</table>\n<br>\n<p>\nProfile Descriptions:\n<ul>\n\
         <li><div class=profile-name>profile: </div> CPU profile, with the labels of every sample. \
         Add <code>?seconds=N</code> (and <code>&amp;hz=F</code>, default 100). After you get the \
         profile file, use the <code>go tool pprof</code> command to investigate it, e.g. \
         <code>go tool pprof -tagfocus http-path:/user</code>.</li>\n\
         <li><div class=profile-name>flamegraph: </div> CPU profile as an SVG flame graph. \
         Add <code>&amp;tagfocus=key:value</code> (repeatable) to keep only the samples with \
         those labels.</li>\n",
    );
    if heap {
        html.push_str(
            "<li><div class=profile-name>allocs: </div> A sampling of all past memory allocations, \
             with their labels (<code>alloc_space</code> first; <code>?seconds=N</code> for the \
             next N seconds only).</li>\n\
             <li><div class=profile-name>heap: </div> A sampling of the memory in use, with the \
             labels and span of each block's allocation (<code>inuse_space</code> first; the \
             count is the sampled blocks alive).</li>\n",
        );
    }
    for p in &customs {
        let _ = writeln!(
            html,
            "<li><div class=profile-name>{}: </div> custom profile: the stacks that added its {} live entries.</li>",
            html_escape(p.name()),
            p.count()
        );
    }
    html.push_str("</ul>\n</p>\n</body>\n</html>\n");
    response(
        StatusCode::OK,
        "text/html; charset=utf-8",
        html.into_bytes(),
    )
}

/// The value of label `key` on `sample`, span ids and name included (they are
/// labels in the pprof output too).
fn label<'a>(sample: &'a Sample, key: &str) -> Option<Cow<'a, str>> {
    match key {
        "trace_id" => sample.trace_id.map(|t| Cow::Owned(t.to_string())),
        "span_id" => sample.span_id.map(|s| Cow::Owned(s.to_string())),
        "span_name" => sample.span_name().map(Cow::Borrowed),
        key => sample.labels.get(key).map(Cow::Borrowed),
    }
}

/// Collapsed stacks (`root;...;leaf count`, one line per distinct stack) of the
/// samples that carry every `tagfocus` label, and how many samples they hold.
pub(crate) fn collapse(profile: &Profile, tagfocus: &[(String, String)]) -> (Vec<String>, u64) {
    let mut stacks: HashMap<String, u64> = HashMap::new();
    let mut total = 0;
    for sample in profile.samples() {
        let focused = tagfocus
            .iter()
            .all(|(k, v)| label(sample, k).is_some_and(|l| l == v.as_str()));
        if !focused || sample.count == 0 {
            continue;
        }
        // Frames are named by their path without generic arguments (which would
        // fill the boxes: `Harness::poll`, not `Harness<T,S>::poll`). `;`
        // separates frames in the collapsed format (Rust names may hold one, as
        // in `[u8; 4]`); a newline would end the line.
        let mut frames: Vec<String> = sample
            .functions()
            .into_iter()
            .map(|f| {
                tracewire::profile::short_name(&f)
                    .replace(';', ",")
                    .replace(['\n', '\r'], " ")
            })
            .collect();
        if frames.is_empty() {
            frames.push("[unknown]".to_owned());
        }
        frames.reverse();
        *stacks.entry(frames.join(";")).or_default() += sample.count;
        total += sample.count;
    }
    let lines = stacks
        .into_iter()
        .map(|(stack, count)| format!("{stack} {count}"))
        .collect();
    (lines, total)
}

/// A flame graph (SVG) of the samples of `profile` that carry every `tagfocus`
/// label, titled `title`, and how many samples it holds.
pub(crate) fn flamegraph_svg(
    profile: &Profile,
    tagfocus: &[(String, String)],
    title: String,
) -> Result<(Vec<u8>, u64), String> {
    let (lines, samples) = collapse(profile, tagfocus);
    let mut options = inferno::flamegraph::Options::default();
    options.title = title;
    options.subtitle = Some(format!(
        "{samples} samples at {:.0} Hz ({:.2} s of CPU){}",
        1.0 / profile.period().as_secs_f64(),
        profile.period().as_secs_f64() * samples as f64,
        match profile.dropped_samples() {
            0 => String::new(),
            n => format!(", {n} dropped"),
        }
    ));
    options.count_name = "samples".to_owned();
    let mut svg = Vec::new();
    match inferno::flamegraph::from_lines(&mut options, lines.iter().map(String::as_str), &mut svg)
    {
        Ok(()) => Ok((svg, samples)),
        // No sample matched: inferno still wrote an SVG that says so.
        Err(_) if samples == 0 && !svg.is_empty() => Ok((svg, 0)),
        Err(e) => Err(format!("cannot draw the flame graph: {e}")),
    }
}

/// The title of a flame graph focused on `tagfocus`.
pub(crate) fn flamegraph_title(tagfocus: &[(String, String)]) -> String {
    if tagfocus.is_empty() {
        return "CPU flame graph".to_owned();
    }
    let focus: Vec<String> = tagfocus.iter().map(|(k, v)| format!("{k}:{v}")).collect();
    format!("CPU flame graph, tagfocus {}", focus.join(" "))
}

/// A flame graph (SVG) of the samples the request focuses on.
/// The answer when a CPU profile could not be finished.
pub(crate) fn stop_failed(e: &tracewire::profile::ProfileError) -> Response<Full<Bytes>> {
    text(
        StatusCode::INTERNAL_SERVER_ERROR,
        format!("the CPU profile failed: {e}\n"),
    )
}

pub(crate) fn flamegraph(profile: &Profile, request: &CpuRequest) -> Response<Full<Bytes>> {
    let title = flamegraph_title(&request.tagfocus);
    match flamegraph_svg(profile, &request.tagfocus, title) {
        Ok((svg, _)) => response(StatusCode::OK, "image/svg+xml", svg),
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_escape_escapes_markup_and_quotes() {
        assert_eq!(
            html_escape("<a href=\"x\">'&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
        assert!(matches!(html_escape("plain"), Cow::Borrowed("plain")));
    }

    #[test]
    fn download_file_names_keep_safe_characters_only() {
        let r = pprof_download("a\"b/c d.Open", |_| Ok(()));
        assert_eq!(
            r.headers()[header::CONTENT_DISPOSITION],
            "attachment; filename=\"abcd.Open\""
        );
    }
}
