//! A bank-account ledger on annal: commands and an aggregate, optimistic
//! concurrency, snapshots, an upcaster for an old event version, and a
//! projection (a read model of balances) fed by a subscription through a
//! projection runner that keeps its checkpoint.
//!
//! Run with `cargo run --example ledger`.

use std::collections::BTreeMap;

use annal::aggregate::{Aggregate, CommandMetadata, DomainEvent, JsonCodec, Repository, Upcasters};
use annal::{
    EventData, ExpectedVersion, HandlerError, Options, Projection, ProjectionRunner, RecordedEvent, Store,
    SubscriptionFilter,
};
use serde::{Deserialize, Serialize};

/// The aggregate: one account.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Account {
    open: bool,
    owner: String,
    balance_cents: i64,
}

/// Its events. `Deposited` is at schema version 2: version 1 stored
/// `{"amount": <whole euros>}`; an upcaster converts it on read.
#[derive(Debug, Serialize, Deserialize)]
enum AccountEvent {
    Opened { owner: String },
    Deposited { cents: i64, memo: Option<String> },
    Withdrawn { cents: i64 },
}

impl DomainEvent for AccountEvent {
    fn event_type(&self) -> &'static str {
        match self {
            AccountEvent::Opened { .. } => "Opened",
            AccountEvent::Deposited { .. } => "Deposited",
            AccountEvent::Withdrawn { .. } => "Withdrawn",
        }
    }
    fn schema_version(&self) -> u16 {
        match self {
            AccountEvent::Deposited { .. } => 2,
            _ => 1,
        }
    }
}

#[derive(Clone, Debug)]
enum Command {
    Open { owner: String },
    Deposit { cents: i64 },
    Withdraw { cents: i64 },
}

#[derive(Debug, thiserror::Error)]
enum LedgerError {
    #[error("account already open")]
    AlreadyOpen,
    #[error("account not open")]
    NotOpen,
    #[error("insufficient funds: balance {balance} cents, asked {asked}")]
    Insufficient { balance: i64, asked: i64 },
    #[error("amounts must be positive")]
    NotPositive,
}

impl Aggregate for Account {
    const CATEGORY: &'static str = "Account";
    type Event = AccountEvent;
    type Command = Command;
    type Error = LedgerError;

    fn apply(&mut self, event: &AccountEvent) {
        match event {
            AccountEvent::Opened { owner } => {
                self.open = true;
                self.owner = owner.clone();
            }
            AccountEvent::Deposited { cents, .. } => self.balance_cents += cents,
            AccountEvent::Withdrawn { cents } => self.balance_cents -= cents,
        }
    }

    fn handle(&self, command: Command) -> Result<Vec<AccountEvent>, LedgerError> {
        match command {
            Command::Open { .. } if self.open => Err(LedgerError::AlreadyOpen),
            Command::Open { owner } => Ok(vec![AccountEvent::Opened { owner }]),
            _ if !self.open => Err(LedgerError::NotOpen),
            Command::Deposit { cents } | Command::Withdraw { cents } if cents <= 0 => Err(LedgerError::NotPositive),
            Command::Deposit { cents } => Ok(vec![AccountEvent::Deposited { cents, memo: None }]),
            Command::Withdraw { cents } if cents > self.balance_cents => Err(LedgerError::Insufficient {
                balance: self.balance_cents,
                asked: cents,
            }),
            Command::Withdraw { cents } => Ok(vec![AccountEvent::Withdrawn { cents }]),
        }
    }
}

/// A read model: every account's balance, fed by a subscription to the
/// `Account` category through a `ProjectionRunner`, which resumes from its
/// checkpoint and saves it as it goes.
struct Balances<'a> {
    repo: &'a Repository<Account>,
    by_account: BTreeMap<String, i64>,
}

impl Projection for Balances<'_> {
    fn apply(&mut self, event: &RecordedEvent) -> Result<(), HandlerError> {
        let amount = match self.repo.decode(event)? {
            AccountEvent::Deposited { cents, .. } => cents,
            AccountEvent::Withdrawn { cents } => -cents,
            AccountEvent::Opened { .. } => 0,
        };
        *self.by_account.entry(event.stream().to_string()).or_default() += amount;
        Ok(())
    }

    fn reset(&mut self) -> Result<(), HandlerError> {
        self.by_account.clear();
        Ok(())
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let store = Store::open(dir.path().join("ledger"), Options::default())?;
    println!("ledger store in {}", store.path().display());

    // An event written by an older version of the app: Deposited v1.
    store.append(
        "Account-alice",
        ExpectedVersion::NoStream,
        [
            EventData::new("Opened", r#"{"owner":"Alice"}"#),
            EventData::new("Deposited", r#"{"amount":100}"#).with_schema_version(1),
        ],
    )?;
    println!("wrote a legacy Deposited v1 event: {{\"amount\":100}} (whole euros)");

    let upcasters = Upcasters::new().register_json("Deposited", 1, |old| {
        let euros = old["amount"].as_i64().unwrap_or(0);
        serde_json::json!({ "cents": euros * 100, "memo": "migrated from v1" })
    });
    let accounts = Repository::<Account>::new(store.clone(), JsonCodec)
        .with_upcasters(upcasters)
        .with_snapshot_every(5);

    // One request running many commands: each command gets its own id
    // (an id reused means "the same command again": it would be applied
    // once), all of them the request's correlation id.
    let request = CommandMetadata::new();
    accounts.execute("bob", Command::Open { owner: "Bob".into() }, request.next_command())?;
    for k in 1..=12 {
        let alice = accounts.execute("alice", Command::Deposit { cents: 250 * k }, request.next_command())?;
        if let Some(v) = alice.snapshot_saved {
            println!("snapshot of Account-alice saved at version {v}");
        }
        accounts.execute("bob", Command::Deposit { cents: 1000 }, request.next_command())?;
    }
    accounts.execute("bob", Command::Withdraw { cents: 3000 }, request.next_command())?;
    match accounts.execute("bob", Command::Withdraw { cents: 1_000_000 }, request.next_command()) {
        Err(e) => println!("refused: {e}"),
        Ok(_) => println!("unexpectedly accepted"),
    }

    let alice = accounts.load("alice")?;
    println!(
        "Account-alice: {} cents at version {} (from snapshot {:?}, replayed {} events)",
        alice.state.balance_cents, alice.version, alice.snapshot_version, alice.replayed
    );
    let full = accounts.load_without_snapshot("alice")?;
    assert_eq!(full.state.balance_cents, alice.state.balance_cents);
    println!("  full replay of {} events agrees", full.replayed);
    let then = accounts.load_at_version("alice", 4)?;
    println!("  as of version 4: {} cents", then.state.balance_cents);

    // Two handlers racing on one account: the loser retries, nothing lost.
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                for _ in 0..10 {
                    accounts
                        .execute("bob", Command::Deposit { cents: 1 }, CommandMetadata::new())
                        .expect("deposit");
                }
            });
        }
    });
    println!(
        "Account-bob after 20 concurrent deposits: {} cents",
        accounts.load("bob")?.state.balance_cents
    );

    let balances = Balances {
        repo: &accounts,
        by_account: BTreeMap::new(),
    };
    let mut runner = ProjectionRunner::new(&store, "balances", SubscriptionFilter::category("Account"), balances)?;
    let applied = runner.run_until_caught_up()?;
    println!(
        "projection applied {applied} events, position {}",
        runner.status().position
    );
    accounts.execute("alice", Command::Withdraw { cents: 500 }, CommandMetadata::new())?;
    let applied = runner.run_until_caught_up()?;
    println!("projection caught up with {applied} more event(s)");
    for (account, cents) in &runner.projection().by_account {
        println!("  {account}: {cents} cents");
        let id = account.strip_prefix("Account-").unwrap_or(account);
        assert_eq!(*cents, accounts.load(id)?.state.balance_cents);
    }
    drop(runner);
    if let Ok(stats) = store.snapshot_stats() {
        println!("snapshot file: {} records, {} bytes", stats.records, stats.file_bytes);
    }
    store.close()?;
    Ok(())
}
