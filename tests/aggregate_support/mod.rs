//! A small bank-account aggregate shared by the snapshot and aggregate
//! tests.
#![allow(dead_code)]

use std::sync::Arc;

use annal::aggregate::{Aggregate, CommandMetadata, DomainEvent, Executed, Repository};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    pub open: bool,
    pub owner: String,
    pub balance: u64,
    pub movements: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AccountEvent {
    Opened { owner: String },
    Deposited { amount: u64 },
    Withdrawn { amount: u64 },
}

impl DomainEvent for AccountEvent {
    fn event_type(&self) -> &'static str {
        match self {
            AccountEvent::Opened { .. } => "Opened",
            AccountEvent::Deposited { .. } => "Deposited",
            AccountEvent::Withdrawn { .. } => "Withdrawn",
        }
    }
}

#[derive(Clone, Debug)]
pub enum AccountCommand {
    Open(String),
    Deposit(u64),
    Withdraw(u64),
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum AccountError {
    #[error("account already open")]
    AlreadyOpen,
    #[error("account not open")]
    NotOpen,
    #[error("insufficient funds")]
    Insufficient,
}

impl Aggregate for Account {
    const CATEGORY: &'static str = "Account";
    type Event = AccountEvent;
    type Command = AccountCommand;
    type Error = AccountError;

    fn apply(&mut self, event: &AccountEvent) {
        match event {
            AccountEvent::Opened { owner } => {
                self.open = true;
                self.owner = owner.clone();
            }
            AccountEvent::Deposited { amount } => self.balance += amount,
            AccountEvent::Withdrawn { amount } => self.balance -= amount,
        }
        self.movements += 1;
    }

    fn handle(&self, command: AccountCommand) -> Result<Vec<AccountEvent>, AccountError> {
        match command {
            AccountCommand::Open(owner) if !self.open => Ok(vec![AccountEvent::Opened { owner }]),
            AccountCommand::Open(_) => Err(AccountError::AlreadyOpen),
            _ if !self.open => Err(AccountError::NotOpen),
            AccountCommand::Deposit(amount) => Ok(vec![AccountEvent::Deposited { amount }]),
            AccountCommand::Withdraw(amount) if amount > self.balance => Err(AccountError::Insufficient),
            AccountCommand::Withdraw(amount) => Ok(vec![AccountEvent::Withdrawn { amount }]),
        }
    }
}

/// The state after applying `events` in order, computed without the store.
pub fn fold(events: &[AccountEvent]) -> Account {
    let mut a = Account::default();
    for e in events {
        a.apply(e);
    }
    a
}

/// Runs one command (`command`, `meta`) on aggregate `id` from `threads`
/// threads at once; their results, each unwrapped.
pub fn run_at_once<A>(
    repo: &Arc<Repository<A>>,
    id: &str,
    command: A::Command,
    meta: CommandMetadata,
    threads: usize,
) -> Vec<Executed<A>>
where
    A: Aggregate + Send + 'static,
    A::Command: Send + 'static,
    A::Error: std::fmt::Debug,
{
    let runs: Vec<_> = (0..threads)
        .map(|_| {
            let (repo, id, command, meta) = (repo.clone(), id.to_string(), command.clone(), meta.clone());
            std::thread::spawn(move || repo.execute(&id, command, meta).unwrap())
        })
        .collect();
    runs.into_iter().map(|t| t.join().unwrap()).collect()
}
