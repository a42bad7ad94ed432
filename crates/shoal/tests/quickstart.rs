//! The README's quick start, pasted into a new crate outside the
//! repository: its `Cargo.toml` line (pointed at this checkout) and its
//! `src/main.rs`, built and run as written.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The first fenced block of `language` after `heading` in `text`.
fn block<'a>(text: &'a str, heading: &str, language: &str) -> &'a str {
    let section = &text[text.find(heading).unwrap_or_else(|| panic!("no {heading:?} in the README"))..];
    let fence = format!("```{language}\n");
    let start = section.find(&fence).unwrap_or_else(|| panic!("no {language} block under {heading:?}")) + fence.len();
    let end = section[start..].find("```").expect("the block ends") + start;
    &section[start..end]
}

#[test]
fn the_readme_quick_start_builds_and_runs_in_a_crate_of_its_own() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("the checkout");
    let readme = std::fs::read_to_string(repo.join("README.md")).expect("README.md");
    let dependency = block(&readme, "## Quick start", "toml");
    let main = block(&readme, "## Quick start", "rust");

    // The README points at a checkout beside the user's crate: here, this one.
    let (before, rest) = dependency.split_once("path = \"").expect("a path dependency");
    let (_, after) = rest.split_once('"').expect("the path ends");
    let facade = repo.join("crates/shoal");
    let dependency = format!("{before}path = {:?}{after}", facade.display().to_string());

    let dir = std::env::temp_dir().join(format!("shoal-quickstart-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("src")).expect("the crate's directory");
    let manifest = format!(
        "[package]\nname = \"quickstart\"\nversion = \"0.1.0\"\nedition = \"2024\"\n\n{dependency}\n[workspace]\n"
    );
    std::fs::write(dir.join("Cargo.toml"), manifest).expect("Cargo.toml");
    std::fs::write(dir.join("src/main.rs"), main).expect("main.rs");
    // The checkout's versions of every dependency, all in cargo's cache
    // once the workspace has built: no network needed.
    std::fs::copy(repo.join("Cargo.lock"), dir.join("Cargo.lock")).expect("Cargo.lock");

    let cargo = std::env::var_os("CARGO").map_or_else(|| PathBuf::from("cargo"), PathBuf::from);
    let output = Command::new(cargo)
        .args(["run", "--offline", "--quiet"])
        .current_dir(&dir)
        // Kept between runs, so that only the first builds shoal from scratch.
        .env("CARGO_TARGET_DIR", repo.join("target/quickstart"))
        .env_remove("SHOAL_WORKER_OF")
        .output()
        .expect("cargo runs");
    let _ = std::fs::remove_dir_all(&dir);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{}\n{stdout}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(stdout, "[0, 1, 4, 9, 16, 25, 36, 49, 64, 81]\n", "prints what the README says");
}
