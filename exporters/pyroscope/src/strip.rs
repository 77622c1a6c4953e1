//! Removing sample labels from a pprof profile before it leaves the process: the
//! labels go, and so do the strings only they used (a trace id removed from the
//! samples is not left behind in the string table).

use tracewire::profile::pprof::Profile;

/// Removes every sample label whose key is one of `keys`; returns how many were
/// removed. The string table is rebuilt without the strings nothing refers to
/// any more.
pub(crate) fn remove_labels(profile: &mut Profile, keys: &[String]) -> usize {
    let doomed: Vec<i64> = profile
        .string_table
        .iter()
        .enumerate()
        .filter(|(i, s)| *i > 0 && keys.iter().any(|k| k == *s))
        .map(|(i, _)| i as i64)
        .collect();
    if doomed.is_empty() {
        return 0;
    }
    let mut removed = 0;
    for sample in &mut profile.sample {
        let before = sample.label.len();
        sample.label.retain(|l| !doomed.contains(&l.key));
        removed += before - sample.label.len();
    }
    if removed > 0 {
        compact_strings(profile);
    }
    removed
}

/// Keeps only the strings the profile refers to, in their first-use order,
/// `""` first as pprof requires.
fn compact_strings(p: &mut Profile) {
    let mut t = Table {
        old: std::mem::take(&mut p.string_table),
        new_index: Vec::new(),
        new: Vec::new(),
    };
    t.new_index = vec![-1; t.old.len()];
    t.keep(&mut 0);
    for v in &mut p.sample_type {
        t.keep(&mut v.r#type);
        t.keep(&mut v.unit);
    }
    for s in &mut p.sample {
        for l in &mut s.label {
            t.keep(&mut l.key);
            t.keep(&mut l.str);
            t.keep(&mut l.num_unit);
        }
    }
    for m in &mut p.mapping {
        t.keep(&mut m.filename);
        t.keep(&mut m.build_id);
    }
    for f in &mut p.function {
        t.keep(&mut f.name);
        t.keep(&mut f.system_name);
        t.keep(&mut f.filename);
    }
    t.keep(&mut p.drop_frames);
    t.keep(&mut p.keep_frames);
    if let Some(v) = &mut p.period_type {
        t.keep(&mut v.r#type);
        t.keep(&mut v.unit);
    }
    for c in &mut p.comment {
        t.keep(c);
    }
    t.keep(&mut p.default_sample_type);
    p.string_table = t.new;
}

struct Table {
    old: Vec<String>,
    /// Old index to new index, -1 while not yet used.
    new_index: Vec<i64>,
    new: Vec<String>,
}

impl Table {
    /// Points `i` at the string's place in the new table (an index out of range
    /// becomes 0, the empty string).
    fn keep(&mut self, i: &mut i64) {
        let Some(old) = usize::try_from(*i).ok().filter(|&o| o < self.old.len()) else {
            *i = 0;
            return;
        };
        if self.new_index[old] < 0 {
            self.new_index[old] = self.new.len() as i64;
            self.new.push(std::mem::take(&mut self.old[old]));
        }
        *i = self.new_index[old];
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracewire::profile::pprof::{Function, Label, Sample, ValueType};

    fn profile() -> Profile {
        let strings = [
            "",
            "cpu",
            "nanoseconds",
            "trace_id",
            "4bf92f3577b34da6a3ce929d0e0e4736",
            "span_id",
            "00f067aa0ba902b7",
            "main",
            "http-path",
            "/user",
        ];
        let label = |k, s| Label {
            key: k,
            str: s,
            ..Label::default()
        };
        Profile {
            sample_type: vec![ValueType { r#type: 1, unit: 2 }],
            sample: vec![Sample {
                location_id: vec![1],
                value: vec![10],
                label: vec![label(8, 9), label(3, 4), label(5, 6)],
            }],
            function: vec![Function {
                id: 1,
                name: 7,
                system_name: 7,
                ..Function::default()
            }],
            string_table: strings.iter().map(|s| s.to_string()).collect(),
            period_type: Some(ValueType { r#type: 1, unit: 2 }),
            ..Profile::default()
        }
    }

    #[test]
    fn a_removed_label_and_its_value_leave_the_profile() {
        let mut p = profile();
        assert_eq!(remove_labels(&mut p, &["trace_id".to_owned()]), 1);
        let labels: Vec<_> = p.labels(&p.sample[0]).collect();
        assert_eq!(
            labels,
            [("http-path", "/user"), ("span_id", "00f067aa0ba902b7")]
        );
        assert!(!p.string_table.iter().any(|s| s.contains("4bf92f")));
        assert!(!p.string_table.iter().any(|s| s == "trace_id"));
        assert_eq!(p.string_table[0], "");
        assert_eq!(p.string(p.sample_type[0].r#type), "cpu");
        assert_eq!(p.string(p.function[0].name), "main");
        assert_eq!(
            p.string(p.period_type.as_ref().unwrap().unit),
            "nanoseconds"
        );
    }

    #[test]
    fn a_profile_without_those_labels_is_left_as_it_is() {
        let mut p = profile();
        let before = p.clone();
        assert_eq!(remove_labels(&mut p, &["tenant".to_owned()]), 0);
        // "main" is a function name, not a label key: nothing to remove.
        assert_eq!(remove_labels(&mut p, &["main".to_owned()]), 0);
        assert_eq!(p, before);
    }
}
