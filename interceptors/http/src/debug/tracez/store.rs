//! What the tracez page shows, kept within the configured bounds: per span name,
//! running counts and latency-bucket and error counts per minute; per name and
//! bucket, the latest sample spans; the in-process traces those samples belong to.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tracewire::export::SpanStart;
use tracewire::trace::{SpanData, SpanId, SpanKind, Status, TraceId};

use super::TracezConfig;

/// OpenCensus zPages' latency buckets: the upper bounds of all but the last.
pub(crate) const BUCKET_BOUNDS: [Duration; 8] = [
    Duration::from_micros(10),
    Duration::from_micros(100),
    Duration::from_millis(1),
    Duration::from_millis(10),
    Duration::from_millis(100),
    Duration::from_secs(1),
    Duration::from_secs(10),
    Duration::from_secs(100),
];
/// How many latency buckets there are.
pub(crate) const BUCKETS: usize = BUCKET_BOUNDS.len() + 1;
/// The column titles of the buckets.
pub(crate) const BUCKET_TITLES: [&str; BUCKETS] = [
    "&lt;10µs",
    "&lt;100µs",
    "&lt;1ms",
    "&lt;10ms",
    "&lt;100ms",
    "&lt;1s",
    "&lt;10s",
    "&lt;100s",
    "&ge;100s",
];

/// The latency bucket of a span that lasted `d`.
pub(crate) fn bucket(d: Duration) -> usize {
    BUCKET_BOUNDS
        .iter()
        .position(|&bound| d < bound)
        .unwrap_or(BUCKETS - 1)
}

/// The duration of a span (zero if its clock went backwards).
pub(crate) fn duration(span: &SpanData) -> Duration {
    span.end_time
        .duration_since(span.start_time)
        .unwrap_or_default()
}

fn minute(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs() / 60
}

/// One minute's counts of one span name.
#[derive(Clone, Copy, Debug, Default)]
struct Minute {
    minute: u64,
    buckets: [u64; BUCKETS],
    errors: u64,
}

/// A sample span: where to find it among the kept traces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SampleRef {
    pub(crate) trace_id: TraceId,
    pub(crate) span_id: SpanId,
    pub(crate) start_time: SystemTime,
    pub(crate) duration: Duration,
}

/// Everything kept for one span name.
#[derive(Debug)]
struct Name {
    name: Arc<str>,
    kind: SpanKind,
    running: u64,
    minutes: VecDeque<Minute>,
    samples: [VecDeque<SampleRef>; BUCKETS],
    errors: VecDeque<SampleRef>,
}

/// A span kept in a trace, with the service that made it.
#[derive(Clone, Debug)]
pub(crate) struct KeptSpan {
    pub(crate) service: Arc<str>,
    pub(crate) span: SpanData,
}

/// An in-process trace: its spans as they arrived (children usually first).
#[derive(Debug)]
struct Trace {
    spans: Vec<KeptSpan>,
    /// Spans not kept: over `max_spans_per_trace`.
    dropped_spans: u64,
    /// Samples pointing into this trace; a pinned trace is evicted last.
    pins: u32,
    /// Insertion order, to tell a live entry of `order` from a stale one.
    seq: u64,
}

/// A summary row: one span name.
#[derive(Clone, Debug)]
pub(crate) struct Row {
    pub(crate) name: Arc<str>,
    pub(crate) kind: SpanKind,
    pub(crate) running: u64,
    pub(crate) buckets: [u64; BUCKETS],
    pub(crate) errors: u64,
    pub(crate) samples: [usize; BUCKETS],
    pub(crate) error_samples: usize,
}

/// The spans of one kept trace, copied out for rendering.
#[derive(Clone, Debug)]
pub(crate) struct TraceView {
    pub(crate) spans: Vec<KeptSpan>,
    pub(crate) dropped_spans: u64,
}

/// How much the store holds, against its bounds. See
/// [`Tracez::stats`](super::Tracez::stats).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TracezStats {
    /// Span names summarized (at most `max_names`).
    pub names: usize,
    /// Spans ended under names that were not summarized (over `max_names`).
    pub spans_of_other_names: u64,
    /// Spans running now, as counted (at most `max_running` are tracked).
    pub running: usize,
    /// Spans that started while `max_running` were already tracked: they are not
    /// counted as running.
    pub running_not_tracked: u64,
    /// Traces kept (at most `max_traces`).
    pub traces: usize,
    /// Spans kept in those traces (at most `max_traces × max_spans_per_trace`).
    pub spans: usize,
    /// Spans not kept because their trace already held `max_spans_per_trace`.
    pub spans_not_kept: u64,
    /// Traces evicted to stay within `max_traces`.
    pub traces_evicted: u64,
    /// Sample spans kept, over all names and buckets.
    pub samples: usize,
}

/// The store. All of it sits behind one mutex in [`Tracez`](super::Tracez).
#[derive(Debug)]
pub(crate) struct Store {
    config: TracezConfig,
    names: Vec<Name>,
    /// The names' indices by name: one per kind the name was seen with.
    index: HashMap<Arc<str>, Vec<usize>>,
    spans_of_other_names: u64,
    running: HashMap<SpanId, usize>,
    running_not_tracked: u64,
    traces: HashMap<TraceId, Trace>,
    order: VecDeque<(TraceId, u64)>,
    next_seq: u64,
    spans: usize,
    spans_not_kept: u64,
    traces_evicted: u64,
}

impl Store {
    pub(crate) fn new(config: TracezConfig) -> Self {
        Store {
            config,
            names: Vec::new(),
            index: HashMap::new(),
            spans_of_other_names: 0,
            running: HashMap::new(),
            running_not_tracked: 0,
            traces: HashMap::new(),
            order: VecDeque::new(),
            next_seq: 0,
            spans: 0,
            spans_not_kept: 0,
            traces_evicted: 0,
        }
    }

    /// The index of `name` with `kind`, if summarized.
    fn find(&self, name: &str, kind: SpanKind) -> Option<usize> {
        self.index
            .get(name)?
            .iter()
            .copied()
            .find(|&i| self.names[i].kind == kind)
    }

    /// The index of `name` with `kind`, added if there is room.
    fn name(&mut self, name: &str, kind: SpanKind) -> Option<usize> {
        if let Some(i) = self.find(name, kind) {
            return Some(i);
        }
        if self.names.len() >= self.config.max_names {
            return None;
        }
        let i = self.names.len();
        let name: Arc<str> = match self.index.get_key_value(name) {
            Some((k, _)) => k.clone(),
            None => Arc::from(name),
        };
        self.index.entry(name.clone()).or_default().push(i);
        self.names.push(Name {
            name,
            kind,
            running: 0,
            minutes: VecDeque::new(),
            samples: Default::default(),
            errors: VecDeque::new(),
        });
        Some(self.names.len() - 1)
    }

    pub(crate) fn on_start(&mut self, span: &SpanStart<'_>) {
        let Some(i) = self.name(span.name, span.kind) else {
            return;
        };
        if self.running.len() >= self.config.max_running {
            self.running_not_tracked += 1;
            return;
        }
        if self
            .running
            .insert(span.span_context.span_id(), i)
            .is_none()
        {
            self.names[i].running += 1;
        }
    }

    pub(crate) fn on_end(&mut self, span: &SpanData) {
        if let Some(i) = self.running.remove(&span.span_context.span_id()) {
            self.names[i].running = self.names[i].running.saturating_sub(1);
        }
        let Some(i) = self.name(&span.name, span.kind) else {
            self.spans_of_other_names += 1;
            return;
        };
        let window = self.config.window_minutes();
        let now = minute(span.end_time);
        let minutes = &mut self.names[i].minutes;
        if minutes.back().is_none_or(|m| m.minute < now) {
            minutes.push_back(Minute {
                minute: now,
                ..Minute::default()
            });
        }
        while minutes.len() as u64 > window {
            minutes.pop_front();
        }
        // A span whose end clock is behind the newest minute counts in it.
        let m = minutes.back_mut().expect("pushed above");
        m.buckets[bucket(duration(span))] += 1;
        if matches!(span.status, Status::Error { .. }) {
            m.errors += 1;
        }
    }

    /// Keeps the spans of a batch (on the export thread): each goes into its
    /// trace, and becomes the newest sample of its name and latency bucket (and of
    /// its name's errors) when its name is summarized.
    pub(crate) fn keep(&mut self, service: &Arc<str>, batch: &[SpanData]) {
        for span in batch {
            let trace_id = span.span_context.trace_id();
            self.add_to_trace(trace_id, service, span);
            let Some(i) = self.find(&span.name, span.kind) else {
                continue;
            };
            let sample = SampleRef {
                trace_id,
                span_id: span.span_context.span_id(),
                start_time: span.start_time,
                duration: duration(span),
            };
            let per_bucket = self.config.samples_per_bucket;
            let b = bucket(sample.duration);
            let error = matches!(span.status, Status::Error { .. });
            for list in [Some(b), error.then_some(BUCKETS)].into_iter().flatten() {
                let name = &mut self.names[i];
                let list = if list == BUCKETS {
                    &mut name.errors
                } else {
                    &mut name.samples[list]
                };
                list.push_back(sample);
                let evicted = (list.len() > per_bucket)
                    .then(|| list.pop_front())
                    .flatten();
                self.pin(trace_id, 1);
                if let Some(old) = evicted {
                    self.pin(old.trace_id, -1);
                }
            }
        }
        self.evict();
    }

    fn pin(&mut self, trace_id: TraceId, by: i32) {
        if let Some(t) = self.traces.get_mut(&trace_id) {
            t.pins = t.pins.saturating_add_signed(by);
        }
    }

    fn add_to_trace(&mut self, trace_id: TraceId, service: &Arc<str>, span: &SpanData) {
        let max_spans = self.config.max_spans_per_trace;
        let seq = self.next_seq;
        let trace = self.traces.entry(trace_id).or_insert_with(|| Trace {
            spans: Vec::new(),
            dropped_spans: 0,
            pins: 0,
            seq,
        });
        if trace.seq == seq {
            self.next_seq += 1;
            self.order.push_back((trace_id, seq));
        }
        if trace.spans.len() >= max_spans {
            trace.dropped_spans += 1;
            self.spans_not_kept += 1;
            return;
        }
        trace.spans.push(KeptSpan {
            service: service.clone(),
            span: span.clone(),
        });
        self.spans += 1;
    }

    /// Evicts traces until at most `max_traces` are kept: the oldest one no sample
    /// points into, else the oldest.
    fn evict(&mut self) {
        // Stale entries (of traces already evicted) go first.
        self.order
            .retain(|(id, seq)| self.traces.get(id).is_some_and(|t| t.seq == *seq));
        while self.traces.len() > self.config.max_traces {
            let victim = self
                .order
                .iter()
                .position(|(id, _)| self.traces.get(id).is_some_and(|t| t.pins == 0))
                .unwrap_or(0);
            let Some((id, _)) = self.order.remove(victim) else {
                return;
            };
            if let Some(t) = self.traces.remove(&id) {
                self.spans -= t.spans.len();
                self.traces_evicted += 1;
            }
        }
    }

    /// The summary rows, ordered by kind (server, client, others) then name.
    pub(crate) fn rows(&self, now: SystemTime) -> Vec<Row> {
        let since = minute(now).saturating_sub(self.config.window_minutes() - 1);
        let mut rows: Vec<Row> = self
            .names
            .iter()
            .map(|n| {
                let mut buckets = [0; BUCKETS];
                let mut errors = 0;
                for m in n.minutes.iter().filter(|m| m.minute >= since) {
                    for (sum, c) in buckets.iter_mut().zip(m.buckets) {
                        *sum += c;
                    }
                    errors += m.errors;
                }
                Row {
                    name: n.name.clone(),
                    kind: n.kind,
                    running: n.running,
                    buckets,
                    errors,
                    samples: std::array::from_fn(|b| n.samples[b].len()),
                    error_samples: n.errors.len(),
                }
            })
            .collect();
        let order = |k: SpanKind| match k {
            SpanKind::Server => 0,
            SpanKind::Client => 1,
            _ => 2,
        };
        rows.sort_by(|a, b| (order(a.kind), &a.name).cmp(&(order(b.kind), &b.name)));
        rows
    }

    /// The samples of `name` with `kind` in `bucket` (`None`: its errors), newest
    /// first, each with its span if its trace is still kept.
    pub(crate) fn samples(
        &self,
        name: &str,
        kind: SpanKind,
        bucket: Option<usize>,
    ) -> Option<Vec<(SampleRef, Option<KeptSpan>)>> {
        let n = &self.names[self.find(name, kind)?];
        let list = match bucket {
            Some(b) => n.samples.get(b)?,
            None => &n.errors,
        };
        Some(
            list.iter()
                .rev()
                .map(|s| (*s, self.span(s.trace_id, s.span_id)))
                .collect(),
        )
    }

    fn span(&self, trace_id: TraceId, span_id: SpanId) -> Option<KeptSpan> {
        self.traces
            .get(&trace_id)?
            .spans
            .iter()
            .find(|k| k.span.span_context.span_id() == span_id)
            .cloned()
    }

    /// A copy of the kept trace `trace_id`.
    pub(crate) fn trace(&self, trace_id: TraceId) -> Option<TraceView> {
        let t = self.traces.get(&trace_id)?;
        Some(TraceView {
            spans: t.spans.clone(),
            dropped_spans: t.dropped_spans,
        })
    }

    /// The slowest local roots among the kept traces (spans without an
    /// in-process parent), slowest first.
    pub(crate) fn slowest_roots(&self, n: usize) -> Vec<KeptSpan> {
        let mut roots: Vec<&KeptSpan> = self
            .traces
            .values()
            .flat_map(|t| {
                t.spans.iter().filter(move |k| {
                    k.span.parent_span_id == SpanId::INVALID
                        || k.span.parent_is_remote
                            && !t
                                .spans
                                .iter()
                                .any(|p| p.span.span_context.span_id() == k.span.parent_span_id)
                })
            })
            .collect();
        roots.sort_by_key(|k| std::cmp::Reverse(duration(&k.span)));
        roots.into_iter().take(n).cloned().collect()
    }

    pub(crate) fn window_minutes(&self) -> u64 {
        self.config.window_minutes()
    }

    pub(crate) fn stats(&self) -> TracezStats {
        TracezStats {
            names: self.names.len(),
            spans_of_other_names: self.spans_of_other_names,
            running: self.running.len(),
            running_not_tracked: self.running_not_tracked,
            traces: self.traces.len(),
            spans: self.spans,
            spans_not_kept: self.spans_not_kept,
            traces_evicted: self.traces_evicted,
            samples: self
                .names
                .iter()
                .map(|n| n.samples.iter().map(VecDeque::len).sum::<usize>() + n.errors.len())
                .sum(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_follow_zpages_bounds() {
        assert_eq!(bucket(Duration::from_micros(9)), 0);
        assert_eq!(bucket(Duration::from_micros(10)), 1);
        assert_eq!(bucket(Duration::from_micros(999)), 2);
        assert_eq!(bucket(Duration::from_millis(1)), 3);
        assert_eq!(bucket(Duration::from_millis(150)), 5);
        assert_eq!(bucket(Duration::from_secs(99)), 7);
        assert_eq!(bucket(Duration::from_secs(100)), 8);
        assert_eq!(bucket(Duration::from_secs(100_000)), 8);
    }
}
