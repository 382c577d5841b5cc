//! Most of the integration tests, compiled into one test binary: each file
//! of `tests/` listed here is one module (`cargo test --release
//! --all-features --test suite cli::` runs `tests/cli.rs`'s tests). One
//! binary instead of one per file saves each file its own build and link of
//! the store's generic code, most of the test build's time. The files that
//! run themselves again as child processes (they name their child test by
//! its path), the one with its own global allocator, the one that measures
//! a thread of the process found by its name, and those with commands of
//! their own in docs/ stay binaries of their own: Cargo.toml's `[[test]]`
//! entries list them.

// Each file declares the helper modules it uses (`mod common;`), as it
// would on its own, so a helper used by several files is compiled once per
// file here: separate modules whose types are never mixed.
#![allow(clippy::duplicate_mod)]

#[path = "aggregates.rs"]
mod aggregates;
#[path = "aggregates_idempotency_review.rs"]
mod aggregates_idempotency_review;
#[path = "ahead_review.rs"]
mod ahead_review;
#[path = "api_mutants_review.rs"]
mod api_mutants_review;
#[path = "api_outside_in.rs"]
mod api_outside_in;
#[path = "app_review.rs"]
mod app_review;
#[path = "backup.rs"]
mod backup;
#[path = "bad_input.rs"]
mod bad_input;
#[path = "category_backward_review.rs"]
mod category_backward_review;
#[path = "category_windows.rs"]
mod category_windows;
#[path = "category_windows_review.rs"]
mod category_windows_review;
#[path = "chain_review.rs"]
mod chain_review;
#[path = "checkpoint_backup_mutants_review.rs"]
mod checkpoint_backup_mutants_review;
#[path = "checkpoints.rs"]
mod checkpoints;
#[path = "cli.rs"]
mod cli;
#[path = "cli_contract_review.rs"]
mod cli_contract_review;
#[path = "cli_kill.rs"]
mod cli_kill;
#[path = "cli_mutants_review.rs"]
mod cli_mutants_review;
#[path = "commit_mutants_review.rs"]
mod commit_mutants_review;
#[path = "contract_review.rs"]
mod contract_review;
#[path = "damage_isolation.rs"]
mod damage_isolation;
#[path = "damage_isolation_review.rs"]
mod damage_isolation_review;
#[path = "decide_mutants_review.rs"]
mod decide_mutants_review;
#[path = "dispatcher.rs"]
mod dispatcher;
#[path = "doc_snippets.rs"]
mod doc_snippets;
#[path = "durability_audit_review.rs"]
mod durability_audit_review;
#[path = "filtered_damage.rs"]
mod filtered_damage;
#[path = "forged_files.rs"]
mod forged_files;
#[path = "format_cleanroom_review.rs"]
mod format_cleanroom_review;
#[path = "group_commit.rs"]
mod group_commit;
#[path = "group_commit_model.rs"]
mod group_commit_model;
#[path = "id_window.rs"]
mod id_window;
#[path = "index_file_mutants_review.rs"]
mod index_file_mutants_review;
#[path = "layout.rs"]
mod layout;
#[path = "missing_log.rs"]
mod missing_log;
#[path = "model.rs"]
mod model;
#[path = "mutation_review.rs"]
mod mutation_review;
#[path = "new_api_review.rs"]
mod new_api_review;
#[path = "open_close_mutants_review.rs"]
mod open_close_mutants_review;
#[path = "open_mutants_review.rs"]
mod open_mutants_review;
#[path = "outside_in.rs"]
mod outside_in;
#[path = "projections.rs"]
mod projections;
#[path = "read_errors.rs"]
mod read_errors;
#[path = "read_model.rs"]
mod read_model;
#[path = "read_mutants_review.rs"]
mod read_mutants_review;
#[path = "read_only.rs"]
mod read_only;
#[path = "real_fs.rs"]
mod real_fs;
#[path = "real_fs_review.rs"]
mod real_fs_review;
#[path = "recovery.rs"]
mod recovery;
#[path = "recovery_mutants_review.rs"]
mod recovery_mutants_review;
#[path = "recovery_newest_mutants_review.rs"]
mod recovery_newest_mutants_review;
#[path = "repair_review.rs"]
mod repair_review;
#[path = "repository_mutants_review.rs"]
mod repository_mutants_review;
#[path = "segment_mutants_review.rs"]
mod segment_mutants_review;
#[path = "semantics.rs"]
mod semantics;
#[path = "session_diff_review.rs"]
mod session_diff_review;
#[path = "session_review.rs"]
mod session_review;
#[path = "smoke.rs"]
mod smoke;
#[path = "snapshot_guard_review.rs"]
mod snapshot_guard_review;
#[path = "snapshot_mutants_review.rs"]
mod snapshot_mutants_review;
#[path = "snapshots.rs"]
mod snapshots;
#[path = "spare_segment.rs"]
mod spare_segment;
#[path = "stress.rs"]
mod stress;
#[path = "subscriptions.rs"]
mod subscriptions;
#[path = "tail_mutants_review.rs"]
mod tail_mutants_review;
#[path = "tools_mutants_review.rs"]
mod tools_mutants_review;
#[path = "tools_review.rs"]
mod tools_review;
#[path = "torture_review.rs"]
mod torture_review;
