//! The Rust fragments of docs/SUBSCRIPTIONS.md and docs/AGGREGATES.md,
//! compiled and run. They are marked `rust,ignore` there: they leave out the
//! store and the application's own functions. Each is written out here
//! unchanged, inside a function that supplies what it leaves out, so a
//! fragment that no longer matches the API fails this file's build;
//! `every_fragment_of_the_docs_is_compiled_here` fails when a fragment is
//! edited in the docs alone. README.md's examples are doctests instead
//! (`src/lib.rs`, `ReadmeDoctests`).
#![cfg(feature = "aggregate")]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use annal::{Options, Store};

fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("s"), Options::default()).unwrap();
    (dir, store)
}

/// Appends `n` events of type `event_type` to `stream`.
fn append(store: &Store, stream: &str, event_type: &str, n: usize) {
    let events: Vec<_> = (0..n).map(|_| annal::EventData::new(event_type, "{}")).collect();
    store.append(stream, annal::ExpectedVersion::Any, events).unwrap();
}

// ---------------------------------------------------------------- SUBSCRIPTIONS.md

/// "Subscribing". Compiled, not run: its loop follows live events until
/// the store is closed.
#[rustfmt::skip]
#[allow(dead_code, unused_variables, unused_mut)]
fn subscribing(store: Store, p: u64) -> Result<(), annal::Error> {
use annal::{StartFrom, SubscriptionFilter};

let mut sub = store.subscribe_all(StartFrom::Start)?;                   // every event
let mut sub = store.subscribe_stream("Order-42", StartFrom::End)?;        // one stream, new events only
let mut sub = store.subscribe_category("Order", StartFrom::After(p))?;    // after a checkpoint
let mut sub = store.subscribe(
    SubscriptionFilter::category("Order").event_type("OrderPaid"),        // narrowed by event type
    StartFrom::Start,
)?;
while let Some(event) = sub.recv()? {
    // ...
}
    Ok(())
}

/// Receipts "sent" by `send_receipt`.
static RECEIPTS: AtomicU64 = AtomicU64::new(0);

fn send_receipt(event: &annal::RecordedEvent) -> Result<(), annal::HandlerError> {
    assert_eq!(event.event_type(), "OrderPaid");
    RECEIPTS.fetch_add(1, Ordering::SeqCst);
    Ok(())
}

/// A read model counting the events it is given.
struct Totals(Arc<AtomicU64>);

impl Totals {
    fn apply(&mut self, _event: &annal::RecordedEvent) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// "Many consumers: the dispatcher".
#[rustfmt::skip]
#[allow(unused_variables)]
fn dispatching(
    store: Store,
    saved: u64,
    mut totals: Totals,
    paid: annal::EventData,
) -> Result<(Vec<annal::HandlerStatus>, annal::AppendResult, bool), annal::Error> {
use std::time::Duration;
use annal::{ExpectedVersion, StartFrom, SubscriptionFilter};

let dispatcher = store
    .dispatcher()
    .handler("emails", SubscriptionFilter::category("Order").event_type("OrderPaid"), StartFrom::End, |e| {
        send_receipt(e)?;                     // Err(..) stops this handler only
        Ok(())
    })?
    .handler("totals", SubscriptionFilter::all(), StartFrom::After(saved), move |e| {
        totals.apply(e);
        Ok(())
    })?
    .start()?;                                // one thread, named "annal-dispatch"

for h in dispatcher.status() {                // name, position, failure
    println!("{} at {}", h.name, h.position);
}
let written = store.append("Order-7", ExpectedVersion::Any, [paid])?;
dispatcher.wait_for(written.last_position, Duration::from_secs(5)); // read your own write
let status = dispatcher.stop()?;              // after the current event; joins the thread
    // What the fragment leaves unchecked: whether `wait_for` got there.
    let there = status.iter().all(|h| h.position >= written.last_position);
    Ok((status, written, there))
}

/// "Checkpoints".
#[rustfmt::skip]
fn checkpoints(
    store: Store,
    sub: annal::Subscription,
) -> Result<(Option<u64>, std::collections::BTreeMap<String, u64>), annal::Error> {
let cps = store.checkpoints();
cps.save("order-summary", sub.position())?;   // durable when it returns
let p = cps.load("order-summary")?;           // None when never saved
cps.remove("order-summary")?;
let all = cps.list()?;
    Ok((p, all))
}

fn stopping() -> bool {
    true
}

/// "Projections".
#[rustfmt::skip]
#[allow(unused_variables)]
fn projections(store: Store) -> Result<(), annal::ProjectionError> {
use std::time::Duration;
impl Totals { fn new() -> Self { Totals {} } }
use annal::{HandlerError, Projection, ProjectionRunner, RecordedEvent, SubscriptionFilter};

struct Totals { /* ... */ }

impl Projection for Totals {
    fn apply(&mut self, event: &RecordedEvent) -> Result<(), HandlerError> { /* ... */ Ok(()) }
    // Optional: begin_batch(), end_batch(position), reset()
}

let mut runner = ProjectionRunner::new(&store, "totals", SubscriptionFilter::category("Order"), Totals::new())?
    .with_checkpoint_every(1000, Duration::from_millis(500));
runner.run_until_caught_up()?;                         // apply what is there, save the checkpoint
runner.run(Duration::from_millis(100), |_| stopping())?; // follow live events until told to stop
runner.rebuild()?;                                      // forget the checkpoint and state, start over
    Ok(())
}

// ---------------------------------------------------------------- AGGREGATES.md

/// A wallet whose "Deposited" events are at schema version 3: version 1
/// was `{"amount": 5}` (whole euros), version 2 added `currency`.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct Wallet {
    cents: i64,
    currencies: Vec<String>,
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
enum WalletEvent {
    Deposited { cents: i64, currency: String },
}

impl annal::aggregate::DomainEvent for WalletEvent {
    fn event_type(&self) -> &'static str {
        "Deposited"
    }
    fn schema_version(&self) -> u16 {
        3
    }
}

impl annal::aggregate::Aggregate for Wallet {
    const CATEGORY: &'static str = "Wallet";
    type Event = WalletEvent;
    type Command = i64;
    type Error = std::convert::Infallible;
    fn apply(&mut self, WalletEvent::Deposited { cents, currency }: &WalletEvent) {
        self.cents += cents;
        self.currencies.push(currency.clone());
    }
    fn handle(&self, cents: i64) -> Result<Vec<WalletEvent>, Self::Error> {
        Ok(vec![WalletEvent::Deposited {
            cents,
            currency: "EUR".into(),
        }])
    }
}

/// "Schema evolution": the upcaster chain.
#[rustfmt::skip]
#[allow(clippy::let_and_return)]
fn upcasting(store: Store) -> annal::aggregate::Repository<Wallet> {
use annal::aggregate::{JsonCodec, Repository, Upcasters};
use serde_json::json;
let upcasters = Upcasters::new()
    .register_json("Deposited", 1, |mut v| { v["currency"] = "EUR".into(); v })
    .register_json("Deposited", 2, |v| json!({ "cents": v["amount"].as_i64().unwrap_or(0) * 100,
                                                "currency": v["currency"] }));
let repo = Repository::<Wallet>::new(store, JsonCodec).with_upcasters(upcasters);
    repo
}

// ---------------------------------------------------------------- the tests

#[test]
fn every_fragment_of_the_docs_is_compiled_here() {
    let root = env!("CARGO_MANIFEST_DIR");
    let here: Vec<&str> = include_str!("doc_snippets.rs").lines().map(str::trim).collect();
    let mut fragments = 0;
    for doc in ["docs/SUBSCRIPTIONS.md", "docs/AGGREGATES.md"] {
        let text = std::fs::read_to_string(format!("{root}/{doc}")).unwrap();
        let mut lines = text.lines().enumerate();
        while let Some((start, line)) = lines.next() {
            if !line.starts_with("```rust") {
                continue;
            }
            assert_eq!(
                line,
                "```rust,ignore",
                "{doc}:{}: a fragment that is not `ignore`",
                start + 1
            );
            let fragment: Vec<&str> = lines
                .by_ref()
                .map(|(_, l)| l)
                .take_while(|l| !l.starts_with("```"))
                .map(str::trim)
                .collect();
            let found = here.windows(fragment.len()).any(|w| w == fragment.as_slice());
            assert!(
                found,
                "{doc}:{}: this fragment is not in tests/doc_snippets.rs:\n{}",
                start + 1,
                fragment.join("\n")
            );
            fragments += 1;
        }
    }
    assert_eq!(
        fragments, 5,
        "a fragment was added to or removed from the docs: add it here too"
    );
}

#[test]
fn the_dispatcher_fragment_runs_as_documented() {
    let (_dir, store) = store();
    append(&store, "Order-1", "OrderPaid", 2);
    append(&store, "Order-2", "OrderPlaced", 3);
    let counted = Arc::new(AtomicU64::new(0));
    let paid = annal::EventData::new("OrderPaid", r#"{"amount":30}"#);
    let before = RECEIPTS.load(Ordering::SeqCst);
    let (status, written, there) = dispatching(store.clone(), 2, Totals(counted.clone()), paid).unwrap();
    assert!(
        there,
        "wait_for returned before both handlers had the append: {status:?}"
    );
    assert_eq!(written.last_position, 6);
    // "emails" starts at the end: only the new OrderPaid; "totals" after
    // position 2: events 3 to 6.
    assert_eq!(RECEIPTS.load(Ordering::SeqCst) - before, 1);
    assert_eq!(counted.load(Ordering::SeqCst), 4);
    let names: Vec<_> = status
        .iter()
        .map(|h| (h.name.as_str(), h.position, h.failure.is_none()))
        .collect();
    assert_eq!(names, [("emails", 6, true), ("totals", 6, true)]);
}

#[test]
fn the_checkpoint_fragment_runs_as_documented() {
    let (_dir, store) = store();
    append(&store, "Order-1", "OrderPlaced", 3);
    let mut sub = store.subscribe_category("Order", annal::StartFrom::Start).unwrap();
    for _ in 0..2 {
        sub.try_recv().unwrap().unwrap();
    }
    store.checkpoints().save("other", 1).unwrap();
    let (loaded, all) = checkpoints(store.clone(), sub).unwrap();
    assert_eq!(loaded, Some(2), "the checkpoint saved is the subscription's position");
    assert_eq!(all.into_iter().collect::<Vec<_>>(), [("other".to_string(), 1)]);
}

#[test]
fn the_projection_fragment_runs_as_documented() {
    let (_dir, store) = store();
    append(&store, "Order-1", "OrderPlaced", 3);
    append(&store, "Stock-1", "Moved", 2);
    append(&store, "Order-2", "OrderPaid", 1);
    store.checkpoints().save("other", 2).unwrap();
    projections(store.clone()).unwrap();
    let saved = store.checkpoints().list().unwrap().into_iter().collect::<Vec<_>>();
    assert_eq!(
        saved,
        [("other".to_string(), 2)],
        "rebuild forgets its own checkpoint, only it"
    );
}

#[test]
fn the_upcaster_fragment_brings_old_payloads_to_the_current_shape() {
    let (_dir, store) = store();
    let stored = [
        annal::EventData::new("Deposited", r#"{"amount":5}"#).with_schema_version(1),
        annal::EventData::new("Deposited", r#"{"amount":2,"currency":"GBP"}"#).with_schema_version(2),
        annal::EventData::new("Deposited", r#"{"cents":7,"currency":"CHF"}"#).with_schema_version(3),
    ];
    store
        .append("Wallet-1", annal::ExpectedVersion::NoStream, stored)
        .unwrap();
    let repo = upcasting(store.clone());
    let loaded = repo.load("1").unwrap();
    assert_eq!(loaded.version, 3);
    assert_eq!(loaded.state.cents, 500 + 200 + 7);
    assert_eq!(loaded.state.currencies, ["EUR", "GBP", "CHF"]);
}
