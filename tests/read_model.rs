//! Reads and subscriptions against a model: random appends to streams of
//! several categories (more than a read page of events), then stream reads
//! at every start, limit and direction around the page edges, category
//! reads, filtered global reads both ways, and subscriptions of every kind
//! of filter started anywhere: each match delivered once, in order, with
//! `position()` never going back nor past an undelivered match; again
//! after a reopen that loads the index file, with more appended.
#![cfg(feature = "sim")]

mod sim_support;

use annal::io::sim::SimFs;
use annal::{
    Durability, EventData, ExpectedVersion, Options, ReadAll, ReadStream, StartFrom, Store, Subscription,
    SubscriptionFilter, SubscriptionState, category_of,
};
use proptest::prelude::*;
use sim_support::dir;

const STREAMS: &[&str] = &["A-1", "A-2", "A", "A-x-y", "Ax-1", "AB-1", "B-1", "Other-1"];
const TYPES: &[&str] = &["T1", "T2", "T3"];

fn options() -> Options {
    Options::default()
        .with_durability(Durability::Buffered)
        .with_segment_size_bytes(64 * 1024)
}

#[derive(Clone, Debug)]
struct M {
    position: u64,
    stream: String,
    event_type: String,
    version: u64,
}

#[derive(Default)]
struct Model {
    events: Vec<M>,
}

impl Model {
    fn head(&self) -> u64 {
        self.events.len() as u64
    }
    fn stream(&self, s: &str) -> Vec<&M> {
        self.events.iter().filter(|e| e.stream == s).collect()
    }

    /// Records the next event, of `stream`.
    fn push(&mut self, stream: &str, event_type: String) {
        let version = self.stream(stream).len() as u64 + 1;
        let position = self.head() + 1;
        self.events.push(M {
            position,
            stream: stream.to_string(),
            event_type,
            version,
        });
    }
}

#[derive(Clone, Debug)]
enum Op {
    /// stream index, event count, type index
    Append(usize, usize, usize),
    /// subscription index, how many try_recv calls
    Recv(usize, usize),
    /// new subscription: filter index, start kind, start seed
    Subscribe(usize, u8, u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..STREAMS.len(), 1usize..120, 0..TYPES.len()).prop_map(|(s, n, t)| Op::Append(s, n, t)),
        3 => (0usize..8, 1usize..400).prop_map(|(s, n)| Op::Recv(s, n)),
        1 => (0usize..7, 0u8..3, any::<u64>()).prop_map(|(f, k, p)| Op::Subscribe(f, k, p)),
    ]
}

/// Whether the model's event of this stream and type matches a filter.
type Matches = Box<dyn Fn(&str, &str) -> bool>;

/// A subscription filter and what it matches.
fn filter(i: usize) -> (SubscriptionFilter, Matches) {
    match i {
        0 => (
            SubscriptionFilter::category("A"),
            Box::new(|s, _| category_of(s) == "A"),
        ),
        1 => (
            SubscriptionFilter::category("B"),
            Box::new(|s, _| category_of(s) == "B"),
        ),
        2 => (SubscriptionFilter::all().event_type("T2"), Box::new(|_, t| t == "T2")),
        3 => (
            SubscriptionFilter::category("A").event_type("T1").event_type("T3"),
            Box::new(|s, t| category_of(s) == "A" && (t == "T1" || t == "T3")),
        ),
        4 => (SubscriptionFilter::all(), Box::new(|_, _| true)),
        5 => (SubscriptionFilter::stream("A-1"), Box::new(|s, _| s == "A-1")),
        _ => (SubscriptionFilter::category("Nope"), Box::new(|_, _| false)),
    }
}

struct Sub {
    sub: Subscription<SimFs>,
    pred: Matches,
    start: u64,
    delivered: Vec<u64>,
    last_position: u64,
}

fn expected(model: &Model, sub: &Sub) -> Vec<u64> {
    model
        .events
        .iter()
        .filter(|e| e.position > sub.start && (sub.pred)(&e.stream, &e.event_type))
        .map(|e| e.position)
        .collect()
}

fn check_sub(model: &Model, sub: &mut Sub, calls: usize) -> Result<(), TestCaseError> {
    let want = expected(model, sub);
    for _ in 0..calls {
        let got = sub.sub.try_recv().expect("try_recv");
        let position = sub.sub.position();
        let status = sub.sub.status();
        prop_assert!(
            position >= sub.last_position,
            "position went back {} -> {}",
            sub.last_position,
            position
        );
        sub.last_position = position;
        prop_assert!(position <= model.head());
        prop_assert_eq!(status.position, position);
        prop_assert!(
            status.buffered < annal::SUBSCRIPTION_PAGE_EVENTS,
            "buffers more than a page: {}",
            status.buffered
        );
        match got {
            Some(e) => {
                let n = sub.delivered.len();
                prop_assert_eq!(Some(&e.position()), want.get(n), "delivered out of model");
                let m = &model.events[e.position() as usize - 1];
                prop_assert_eq!(
                    (e.stream(), e.event_type(), e.version()),
                    (&*m.stream, &*m.event_type, m.version)
                );
                sub.delivered.push(e.position());
                prop_assert!(position >= e.position() || status.buffered > 0);
            }
            None => {
                prop_assert_eq!(&sub.delivered, &want, "caught up but missing events");
                prop_assert_eq!(position, model.head(), "caught up, position not at head");
                prop_assert_eq!(status.state, SubscriptionState::Live);
                break;
            }
        }
        // No undelivered match at or before position().
        let next = want.get(sub.delivered.len()).copied().unwrap_or(u64::MAX);
        prop_assert!(position < next, "position {} past undelivered match {}", position, next);
    }
    Ok(())
}

fn check_reads(store: &Store<SimFs>, model: &Model, seed: u64) -> Result<(), TestCaseError> {
    // Stream reads.
    for s in STREAMS {
        let all = model.stream(s);
        let len = all.len() as u64;
        let froms = [
            0,
            1,
            2,
            len.saturating_sub(1),
            len,
            len + 1,
            511,
            512,
            513,
            seed % (len + 2),
            u64::MAX,
        ];
        let limits = [0usize, 1, 2, 511, 512, 513, (seed % 700) as usize, usize::MAX];
        for &from in &froms {
            for &limit in &limits {
                for backward in [false, true] {
                    let mut o = if backward {
                        ReadStream::backward()
                    } else {
                        ReadStream::forward()
                    };
                    o = o.from_version(from).limit(limit);
                    let got: Vec<u64> = store
                        .read_stream(s, o)
                        .unwrap()
                        .map(|e| e.unwrap().position())
                        .collect();
                    let want: Vec<u64> = if backward {
                        all.iter()
                            .rev()
                            .filter(|e| e.version <= from)
                            .take(limit)
                            .map(|e| e.position)
                            .collect()
                    } else {
                        all.iter()
                            .filter(|e| e.version >= from.max(1))
                            .take(limit)
                            .map(|e| e.position)
                            .collect()
                    };
                    prop_assert_eq!(
                        got,
                        want,
                        "stream {} from {} limit {} backward {}",
                        s,
                        from,
                        limit,
                        backward
                    );
                }
            }
        }
        let got: Vec<u64> = store
            .read_stream(s, ReadStream::backward())
            .unwrap()
            .map(|e| e.unwrap().position())
            .collect();
        let want: Vec<u64> = all.iter().rev().map(|e| e.position).collect();
        prop_assert_eq!(got, want);
    }
    // Category reads.
    let head = model.head();
    for c in ["A", "B", "AB", "Ax", "Other", "Nope"] {
        for after in [
            0,
            1,
            seed % (head + 1),
            head.saturating_sub(1),
            head,
            head + 5,
            u64::MAX,
        ] {
            for limit in [None, Some(0), Some(1), Some(300), Some(usize::MAX)] {
                let got: Vec<u64> = store
                    .read_category(c, after, limit)
                    .unwrap()
                    .map(|e| e.unwrap().position())
                    .collect();
                let want: Vec<u64> = model
                    .events
                    .iter()
                    .filter(|e| category_of(&e.stream) == c && e.position > after)
                    .take(limit.unwrap_or(usize::MAX))
                    .map(|e| e.position)
                    .collect();
                prop_assert_eq!(got, want, "category {} after {} limit {:?}", c, after, limit);
            }
        }
    }
    // Filtered global reads.
    type Pred = Box<dyn Fn(&M) -> bool>;
    let filters: Vec<(ReadAll, ReadAll, Pred)> = vec![
        (
            ReadAll::forward().category("A"),
            ReadAll::backward().category("A"),
            Box::new(|e: &M| category_of(&e.stream) == "A"),
        ),
        (
            ReadAll::forward().stream_prefix("A"),
            ReadAll::backward().stream_prefix("A"),
            Box::new(|e: &M| e.stream.starts_with('A')),
        ),
        (
            ReadAll::forward().stream_prefix("A-").event_type("T3"),
            ReadAll::backward().stream_prefix("A-").event_type("T3"),
            Box::new(|e: &M| e.stream.starts_with("A-") && e.event_type == "T3"),
        ),
        (
            ReadAll::forward().event_type("T1").event_type("T2").category("B"),
            ReadAll::backward().event_type("T1").event_type("T2").category("B"),
            Box::new(|e: &M| category_of(&e.stream) == "B" && e.event_type != "T3"),
        ),
    ];
    for (fwd, bwd, pred) in &filters {
        for from in [
            None,
            Some(0),
            Some(1),
            Some(seed % (head + 1)),
            Some(head),
            Some(head + 1),
        ] {
            for limit in [None, Some(0), Some(1), Some(257)] {
                let mut f = fwd.clone();
                let mut b = bwd.clone();
                if let Some(p) = from {
                    f = f.from_position(p);
                    b = b.from_position(p);
                }
                if let Some(n) = limit {
                    f = f.limit(n);
                    b = b.limit(n);
                }
                let got_f: Vec<u64> = store.read_all(f).unwrap().map(|e| e.unwrap().position()).collect();
                let got_b: Vec<u64> = store.read_all(b).unwrap().map(|e| e.unwrap().position()).collect();
                let lim = limit.unwrap_or(usize::MAX);
                let want_f: Vec<u64> = model
                    .events
                    .iter()
                    .filter(|e| from.is_none_or(|p| e.position > p) && pred(e))
                    .take(lim)
                    .map(|e| e.position)
                    .collect();
                let want_b: Vec<u64> = model
                    .events
                    .iter()
                    .rev()
                    .filter(|e| from.is_none_or(|p| e.position < p) && pred(e))
                    .take(lim)
                    .map(|e| e.position)
                    .collect();
                prop_assert_eq!(got_f, want_f);
                prop_assert_eq!(got_b, want_b);
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn reads_and_subscriptions_match_a_model(ops in proptest::collection::vec(op(), 1..40), seed in any::<u64>()) {
        let fs = SimFs::new(seed);
        let store = Store::open_with(fs.clone(), dir(), options()).unwrap();
        let mut model = Model::default();
        let mut subs: Vec<Sub> = Vec::new();
        let mut id = 0u64;
        for op in ops {
            match op {
                Op::Append(s, n, t) => {
                    let stream = STREAMS[s];
                    let events: Vec<EventData> = (0..n)
                        .map(|k| {
                            id += 1;
                            // Type varies within a batch too.
                            EventData::new(TYPES[(t + k % 2 * (k / 2 % 2)) % TYPES.len()], format!("{id}"))
                        })
                        .collect();
                    let types: Vec<String> = events.iter().map(|e| e.event_type().to_string()).collect();
                    store.append(stream, ExpectedVersion::Any, events).unwrap();
                    for ty in types {
                        model.push(stream, ty);
                    }
                    prop_assert_eq!(store.last_position(), model.head());
                }
                Op::Recv(i, n) => {
                    if subs.is_empty() { continue; }
                    let k = i % subs.len();
                    check_sub(&model, &mut subs[k], n)?;
                }
                Op::Subscribe(f, kind, p) => {
                    let (flt, pred) = filter(f);
                    let head = model.head();
                    let (from, start) = match kind {
                        0 => (StartFrom::Start, 0),
                        1 => (StartFrom::End, head),
                        _ => { let p = p % (head + 1); (StartFrom::After(p), p) }
                    };
                    let sub = store.subscribe(flt, from).unwrap();
                    prop_assert_eq!(sub.position(), start);
                    subs.push(Sub { sub, pred, start, delivered: Vec::new(), last_position: start });
                }
            }
        }
        for f in 0..7 {
            let (flt, pred) = filter(f);
            let sub = store.subscribe(flt, StartFrom::Start).unwrap();
            subs.push(Sub { sub, pred, start: 0, delivered: Vec::new(), last_position: 0 });
        }
        for sub in &mut subs {
            check_sub(&model, sub, usize::MAX)?;
        }
        check_reads(&store, &model, seed)?;
        // Reopened: the index loaded from its file, then more appended.
        drop(subs);
        store.close().unwrap();
        let store = Store::open_with(SimFs::from_image(&fs.durable_image(), seed), dir(), options()).unwrap();
        prop_assert!(store.recovery_report().index_loaded || model.head() == 0);
        for (k, s) in STREAMS.iter().enumerate() {
            let n = (seed as usize >> k) % 600;
            if n == 0 { continue; }
            let events: Vec<EventData> = (0..n).map(|i| EventData::new(TYPES[i % 3], "y")).collect();
            store.append(s, ExpectedVersion::Any, events).unwrap();
            for i in 0..n {
                model.push(s, TYPES[i % 3].to_string());
            }
        }
        check_reads(&store, &model, seed)?;
        for f in 0..7 {
            let (flt, pred) = filter(f);
            let start = seed % (model.head() + 1);
            let sub = store.subscribe(flt, StartFrom::After(start)).unwrap();
            let mut sub = Sub { sub, pred, start, delivered: Vec::new(), last_position: start };
            check_sub(&model, &mut sub, usize::MAX)?;
        }
    }
}
