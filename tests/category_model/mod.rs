//! Shared by the category reviews (`category_windows_review`,
//! `category_backward_review`): a model of what a store of mixed
//! categories holds, and the append that keeps it.
#![allow(dead_code)]

use std::collections::HashMap;

use annal::io::sim::SimFs;
use annal::{EventData, ExpectedVersion, Store, StreamAppend, category_of};

/// The model: every event (stream, type) by position, every batch as its
/// first and last positions, and each category's positions.
#[derive(Clone, Default)]
pub struct Model {
    pub events: Vec<(String, &'static str)>,
    pub batches: Vec<(u64, u64)>,
    pub by_category: HashMap<String, Vec<u64>>,
}

/// Filters besides the category.
#[derive(Clone, Copy, Debug)]
pub struct Filt<'a> {
    pub types: &'a [&'a str],
    pub prefix: Option<&'a str>,
}

/// No filter besides the category.
pub const NONE: Filt<'static> = Filt {
    types: &[],
    prefix: None,
};

impl<'a> Filt<'a> {
    /// Events of one of `types`.
    pub const fn types(types: &'a [&'a str]) -> Self {
        Filt { types, prefix: None }
    }

    /// Events of streams starting with `prefix`.
    pub const fn prefix(prefix: &'a str) -> Self {
        Filt {
            types: &[],
            prefix: Some(prefix),
        }
    }
}

impl Model {
    pub fn head(&self) -> u64 {
        self.events.len() as u64
    }

    /// The stream of the event at `position`.
    pub fn stream(&self, position: u64) -> &str {
        &self.events[position as usize - 1].0
    }

    /// Streams of `category`.
    pub fn streams(&self, category: &str) -> u64 {
        let mut names: Vec<&str> = self
            .by_category
            .get(category)
            .map(|ps| ps.iter().map(|&p| self.stream(p)).collect())
            .unwrap_or_default();
        names.sort_unstable();
        names.dedup();
        names.len() as u64
    }

    /// Positions in `(after, last]` of `category` that `f` keeps,
    /// ascending.
    pub fn want(&self, category: &str, f: &Filt, after: u64, last: u64) -> Vec<u64> {
        let Some(ps) = self.by_category.get(category) else {
            return Vec::new();
        };
        let from = ps.partition_point(|&p| p <= after);
        let to = ps.partition_point(|&p| p <= last);
        ps[from..to.max(from)]
            .iter()
            .copied()
            .filter(|&p| {
                let (stream, ty) = &self.events[p as usize - 1];
                (f.types.is_empty() || f.types.contains(ty)) && f.prefix.is_none_or(|x| stream.starts_with(x))
            })
            .collect()
    }

    /// The same, newest first: what a backward read from `next` down
    /// returns.
    pub fn want_down(&self, category: &str, f: &Filt, low: u64, next: u64) -> Vec<u64> {
        let mut want = self.want(category, f, low, next);
        want.reverse();
        want
    }

    /// The batch holding `position`, as its first and last positions.
    pub fn batch_of(&self, position: u64) -> (u64, u64) {
        let i = self.batches.partition_point(|&(_, last)| last < position);
        self.batches[i]
    }

    /// Whether the batch `(first, last)` holds an event of `category`.
    pub fn holds(&self, (first, last): (u64, u64), category: &str) -> bool {
        (first..=last).any(|p| category_of(self.stream(p)) == category)
    }

    /// Forgets the events after `head` (a crash took them).
    pub fn truncate(&mut self, head: u64) {
        self.events.truncate(head as usize);
        self.batches.retain(|&(_, last)| last <= head);
        for ps in self.by_category.values_mut() {
            ps.retain(|&p| p <= head);
        }
    }
}

/// Appends one batch of `events` (stream, type) as one `append_multi`,
/// recording it in the model; each event's data is `payload-NNNNNN`, its
/// position. Streams of a batch are grouped, in order of first appearance.
pub fn append_batch(store: &Store<SimFs>, model: &mut Model, events: &[(String, &'static str)]) {
    let mut groups: Vec<(String, Vec<&'static str>)> = Vec::new();
    for (stream, ty) in events {
        match groups.iter_mut().find(|(s, _)| s == stream) {
            Some((_, types)) => types.push(ty),
            None => groups.push((stream.clone(), vec![ty])),
        }
    }
    let first = model.head() + 1;
    let mut p = first;
    let mut appends = Vec::new();
    for (stream, types) in &groups {
        let mut data = Vec::new();
        for ty in types {
            data.push(EventData::new(*ty, format!("payload-{p:06}")));
            model.events.push((stream.clone(), ty));
            model
                .by_category
                .entry(category_of(stream).to_string())
                .or_default()
                .push(p);
            p += 1;
        }
        appends.push(StreamAppend::new(stream.clone(), ExpectedVersion::Any, data));
    }
    store.append_multi(&appends).unwrap();
    model.batches.push((first, p - 1));
}
