//! Builds a read model (order totals per customer) from a subscription
//! with the projection runner, persisting the model and its position
//! together so that redelivery after a crash is harmless.
//!
//! Run with `cargo run --example read_model`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use annal::{
    EventData, ExpectedVersion, HandlerError, Options, Projection, ProjectionRunner, RecordedEvent, Store,
    SubscriptionFilter,
};

/// Order totals per customer, saved to `totals.txt` with the position it
/// covers (the first line).
struct Totals {
    file: PathBuf,
    position: u64,
    totals: BTreeMap<String, u64>,
}

impl Totals {
    fn load(file: PathBuf) -> Totals {
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        let mut lines = text.lines();
        let position = lines.next().and_then(|l| l.parse().ok()).unwrap_or(0);
        let totals = lines
            .filter_map(|l| l.split_once(' '))
            .filter_map(|(c, t)| Some((c.to_string(), t.parse().ok()?)))
            .collect();
        Totals { file, position, totals }
    }
}

impl Projection for Totals {
    fn apply(&mut self, event: &RecordedEvent) -> Result<(), HandlerError> {
        // Idempotent: an event the saved model already covers is skipped.
        if event.position() <= self.position || event.event_type() != "OrderPlaced" {
            return Ok(());
        }
        let amount: u64 = std::str::from_utf8(event.data())?.parse()?;
        let customer = event.stream().trim_start_matches("Order-").to_string();
        *self.totals.entry(customer).or_default() += amount;
        self.position = event.position();
        Ok(())
    }

    fn end_batch(&mut self, position: u64) -> Result<(), HandlerError> {
        // Model and position in one file, replaced atomically.
        self.position = self.position.max(position);
        let mut text = format!("{}\n", self.position);
        for (customer, total) in &self.totals {
            text.push_str(&format!("{customer} {total}\n"));
        }
        let tmp = self.file.with_extension("tmp");
        std::fs::write(&tmp, text)?;
        std::fs::File::open(&tmp)?.sync_all()?;
        std::fs::rename(&tmp, &self.file)?;
        // The rename is durable once the directory is synced (on Unix; a
        // directory cannot be opened as a file on Windows).
        #[cfg(unix)]
        {
            let dir = self.file.parent().filter(|d| !d.as_os_str().is_empty());
            std::fs::File::open(dir.unwrap_or(std::path::Path::new(".")))?.sync_all()?;
        }
        Ok(())
    }

    fn reset(&mut self) -> Result<(), HandlerError> {
        self.position = 0;
        self.totals.clear();
        Ok(())
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let store = Store::open(dir.path().join("events"), Options::default())?;
    for (customer, amount) in [("alice", 30), ("bob", 12), ("alice", 5)] {
        let e = EventData::new("OrderPlaced", amount.to_string());
        store.append(&format!("Order-{customer}"), ExpectedVersion::Any, [e])?;
    }

    let model = dir.path().join("totals.txt");
    let mut runner = ProjectionRunner::new(
        &store,
        "totals",
        SubscriptionFilter::category("Order"),
        Totals::load(model.clone()),
    )?
    .with_checkpoint_every(100, Duration::from_millis(200));
    runner.run_until_caught_up()?;
    println!("after catch-up: {:?}", runner.projection().totals);

    // Live: a writer appends while the runner follows.
    let writer = {
        let store = store.clone();
        std::thread::spawn(move || {
            let e = EventData::new("OrderPlaced", "7");
            store.append("Order-carol", ExpectedVersion::Any, [e]).map(|_| ())
        })
    };
    runner.run(Duration::from_millis(50), |t| t.totals.contains_key("carol"))?;
    writer.join().map_err(|_| "writer panicked")??;
    println!("live: {:?}, lag {}", runner.projection().totals, runner.status().lag);
    println!("model file:\n{}", std::fs::read_to_string(&model)?);
    Ok(())
}
