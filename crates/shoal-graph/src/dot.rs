//! Graphviz output of task graphs.

use std::fmt::Write as _;
use std::io;
use std::path::Path;
use std::process::Command;

use crate::graph::{Dep, Graph};

/// DOT text of a graph; see [`Graph::to_dot`].
pub(crate) fn to_dot(graph: &Graph) -> String {
    let mut out = String::with_capacity(64 + graph.len() * 120);
    out.push_str("digraph shoal {\n  rankdir=BT;\n  node [fontname=\"Helvetica\"];\n");
    for (i, task) in graph.tasks().iter().enumerate() {
        let _ = writeln!(out, "  f{i} [shape=circle, label=\"{}\"];", escape(task.func.short_name()));
        let _ = writeln!(out, "  d{i} [shape=box, label=\"{}\"];", escape(&data_label(&task.key)));
        let _ = writeln!(out, "  f{i} -> d{i};");
        for dep in graph.dependencies(i) {
            match dep {
                Dep::Internal(j) => {
                    let _ = writeln!(out, "  d{j} -> f{i};");
                }
                Dep::External(key) => {
                    let _ = writeln!(
                        out,
                        "  \"{}\" [shape=box, style=dashed];\n  \"{}\" -> f{i};",
                        escape(&key.to_string()),
                        escape(&key.to_string())
                    );
                }
            }
        }
    }
    out.push_str("}\n");
    out
}

/// A short label for a result: prefix, first token digits and the index.
fn data_label(key: &crate::Key) -> String {
    let token = key.token().to_string();
    let mut label = format!("{}-{}", key.prefix(), &token[..8]);
    if !key.index().is_empty() {
        let idx: Vec<String> = key.index().iter().map(|i| i.to_string()).collect();
        label = format!("({label}, {})", idx.join(", "));
    }
    label
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

/// Why a picture of a graph could not be written.
#[derive(Debug, thiserror::Error)]
pub enum VisualizeError {
    /// The file could not be written.
    #[error("cannot write {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The underlying error.
        source: io::Error,
    },
    /// The Graphviz `dot` program is needed for this format and is missing.
    #[error(
        "writing {path} needs the Graphviz `dot` program, which was not found ({source}); install graphviz or write a .dot file"
    )]
    DotMissing {
        /// The file.
        path: String,
        /// The error from starting `dot`.
        source: io::Error,
    },
    /// `dot` ran and failed.
    #[error("`dot` failed to render {path}: {stderr}")]
    DotFailed {
        /// The file.
        path: String,
        /// What `dot` printed.
        stderr: String,
    },
}

/// Writes DOT text to `path`: as is for `.dot`/`.gv`, rendered with Graphviz
/// for any other extension (`.svg`, `.png`, `.pdf`).
///
/// # Errors
/// See [`VisualizeError`].
pub fn write_dot(dot: &str, path: &Path) -> Result<(), VisualizeError> {
    let shown = path.display().to_string();
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("dot").to_ascii_lowercase();
    if ext == "dot" || ext == "gv" {
        return std::fs::write(path, dot).map_err(|source| VisualizeError::Io { path: shown, source });
    }
    let mut child = Command::new("dot")
        .arg(format!("-T{ext}"))
        .arg("-o")
        .arg(path)
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|source| VisualizeError::DotMissing { path: shown.clone(), source })?;
    if let Some(mut stdin) = child.stdin.take() {
        use std::io::Write as _;
        stdin.write_all(dot.as_bytes()).map_err(|source| VisualizeError::Io { path: shown.clone(), source })?;
    }
    let output = child.wait_with_output().map_err(|source| VisualizeError::Io { path: shown.clone(), source })?;
    if !output.status.success() {
        return Err(VisualizeError::DotFailed {
            path: shown,
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        });
    }
    Ok(())
}
