//! Every file of `tests/` runs: `autotests` is off in Cargo.toml (most
//! files are modules of `tests/suite.rs`), so a new file would otherwise
//! be compiled by nobody and pass by never running. Each top-level `.rs`
//! file must be a module of the suite or a `[[test]]` entry of its own,
//! not both.

use std::path::Path;

#[test]
fn every_test_file_is_in_the_suite_or_a_binary_of_its_own() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let suite = std::fs::read_to_string(root.join("tests/suite.rs")).unwrap();
    let manifest = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
    let in_suite = |name: &str| suite.contains(&format!("#[path = \"{name}\"]"));
    let own_binary = |name: &str| manifest.contains(&format!("path = \"tests/{name}\""));
    let mut files: Vec<String> = std::fs::read_dir(root.join("tests"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".rs"))
        .collect();
    files.sort();
    assert!(files.len() > 40, "tests/ read: {files:?}");
    for name in &files {
        if name == "suite.rs" {
            assert!(own_binary(name), "Cargo.toml has no [[test]] entry for tests/suite.rs");
            continue;
        }
        match (in_suite(name), own_binary(name)) {
            (true, false) | (false, true) => {}
            (false, false) => panic!("tests/{name} runs nowhere: add it to tests/suite.rs or give it a [[test]] entry"),
            (true, true) => panic!("tests/{name} is both a module of the suite and a binary: it would run twice"),
        }
    }
}
