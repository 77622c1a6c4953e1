//! The record of a recording span: one allocation, taken from the thread's pool
//! when the span (or its builder) first needs it, filled in place, and handed as
//! a pointer to the export thread, which gives it back to the thread that made
//! it. Nothing of a span is copied on its way out but the exporter's view of it.

use std::cell::RefCell;
use std::time::SystemTime;

use super::clock::{self, Converter, Tick};
use super::span::limit_attributes;
use super::{Link, SpanData, SpanLimits, Status};

/// What a recording span has recorded, in the form exporters receive; its start
/// and end stay counter readings until they are converted (by the export
/// thread, or on the span's thread when something there needs them).
#[derive(Debug)]
pub(crate) struct Record {
    pub(crate) data: SpanData,
    /// The start as a counter reading; `None` when `data.start_time` holds it.
    pub(crate) start: Option<Tick>,
    /// The end as a counter reading; `None` when `data.end_time` holds it.
    pub(crate) end: Option<Tick>,
}

/// Records a thread keeps for its next spans. With the ring of queued spans,
/// what a producing thread holds once it stops making spans (exported records
/// waiting for it beyond these are freed by the export thread): 32 records of
/// 288 bytes with room for up to 16 attributes (an HTTP server span has 9 to
/// 12) and 4 events and links, under 40 KiB for server spans.
const POOL_CAPACITY: usize = 32;

/// Attribute vectors with room for more than this are freed rather than kept
/// with a pooled record.
const KEEP_ATTRIBUTES: usize = 16;

/// The same for events and links, rarer.
const KEEP_EVENTS_AND_LINKS: usize = 4;

thread_local! {
    #[allow(clippy::vec_box)] // records travel as pointers
    static POOL: RefCell<Vec<Box<Record>>> = const { RefCell::new(Vec::new()) };
}

impl Record {
    /// An empty record, from this thread's pool when it has one.
    #[inline]
    pub(crate) fn take() -> Box<Record> {
        POOL.try_with(|p| p.borrow_mut().pop())
            .ok()
            .flatten()
            .unwrap_or_else(|| {
                Box::new(Record {
                    data: SpanData::placeholder(),
                    start: None,
                    end: None,
                })
            })
    }

    /// Empties `rec` and keeps it for this thread's next spans (or frees it, when
    /// the pool is full).
    #[inline]
    pub(crate) fn give(mut rec: Box<Record>) {
        rec.clear();
        let _ = POOL.try_with(move |p| {
            let mut p = p.borrow_mut();
            if p.len() < POOL_CAPACITY {
                p.push(rec);
            }
        });
    }

    /// How many records this thread's pool would take back now: none while it
    /// is at least half full (so refilling it is a rare, bulk affair).
    #[inline]
    pub(crate) fn pool_wants() -> usize {
        POOL.try_with(|p| {
            let len = p.borrow().len();
            if len < POOL_CAPACITY / 2 {
                POOL_CAPACITY - len
            } else {
                0
            }
        })
        .unwrap_or(0)
    }

    /// Keeps each of `recs`, already [emptied](Self::clear), for this thread's
    /// next spans, as far as the pool has room (the rest is freed).
    #[cold]
    pub(crate) fn keep_all(recs: impl Iterator<Item = Box<Record>>) {
        let _ = POOL.try_with(move |p| {
            let mut p = p.borrow_mut();
            for rec in recs {
                if p.len() >= POOL_CAPACITY {
                    break;
                }
                debug_assert!(rec.data.attributes.is_empty() && rec.start.is_none());
                p.push(rec);
            }
        });
    }

    /// Empties the record for another span, keeping the room of its vectors
    /// (within bounds). The export thread empties the records it gives back, so
    /// that dropping what the last span held costs the span's thread nothing.
    pub(crate) fn clear(&mut self) {
        fn empty<T>(v: &mut Vec<T>, keep: usize) {
            if v.capacity() > keep {
                *v = Vec::new();
            } else {
                v.clear();
            }
        }
        let d = &mut self.data;
        empty(&mut d.attributes, KEEP_ATTRIBUTES);
        empty(&mut d.events, KEEP_EVENTS_AND_LINKS);
        empty(&mut d.links, KEEP_EVENTS_AND_LINKS);
        let placeholder = SpanData::placeholder();
        d.span_context = placeholder.span_context;
        d.name = placeholder.name;
        d.scope = placeholder.scope;
        d.status = Status::Unset;
        d.dropped_attributes_count = 0;
        d.dropped_events_count = 0;
        d.dropped_links_count = 0;
        self.start = None;
        self.end = None;
    }

    /// Adds `link`, within the limits.
    pub(crate) fn add_link(&mut self, mut link: Link, limits: &SpanLimits) {
        let d = &mut self.data;
        if d.links.len() >= limits.max_links_per_span as usize {
            d.dropped_links_count += 1;
            return;
        }
        link.dropped_attributes_count += limit_attributes(
            &mut link.attributes,
            limits.max_attributes_per_link,
            limits.max_attribute_value_length,
        );
        d.links.push(link);
    }

    /// Applies the link limits to the links set on a span's builder: the first
    /// ones are kept.
    pub(crate) fn limit_links(&mut self, limits: &SpanLimits) {
        let d = &mut self.data;
        let max = limits.max_links_per_span as usize;
        if d.links.len() > max {
            d.dropped_links_count += (d.links.len() - max) as u32;
            d.links.truncate(max);
        }
        for link in d.links.iter_mut() {
            link.dropped_attributes_count += limit_attributes(
                &mut link.attributes,
                limits.max_attributes_per_link,
                limits.max_attribute_value_length,
            );
        }
    }

    /// Turns the counter readings into wall-clock times with `conv` (an end
    /// before the start is moved to the start).
    pub(crate) fn stamp_with(&mut self, conv: &mut Converter) {
        if let Some(t) = self.start.take() {
            self.data.start_time = conv.convert(t);
        }
        if let Some(t) = self.end.take() {
            self.data.end_time = conv.convert(t);
        }
        if self.data.end_time < self.data.start_time {
            self.data.end_time = self.data.start_time;
        }
    }

    /// [`stamp_with`](Self::stamp_with) the calling thread's converter.
    pub(crate) fn stamp(&mut self) {
        clock::with_local(|conv| self.stamp_with(conv));
    }

    /// Takes the (stamped) span out, leaving an empty record to give back.
    pub(crate) fn take_data(&mut self) -> SpanData {
        self.stamp();
        std::mem::replace(&mut self.data, SpanData::placeholder())
    }

    /// A record holding `data` as it is (its times already wall-clock times).
    pub(crate) fn of(data: SpanData) -> Box<Record> {
        let mut rec = Record::take();
        rec.data = data;
        rec
    }

    /// Sets the start: `explicit`, or now.
    #[inline]
    pub(crate) fn set_start(&mut self, explicit: Option<SystemTime>) {
        match explicit {
            Some(t) => {
                self.data.start_time = t;
                self.start = None;
            }
            None => self.start = Some(clock::now()),
        }
    }
}
