//! Text files as bags: one element per line, plain, gzip (`.gz`) or zstd
//! (`.zst`, `.zstd`) by the file's extension, read and written on the
//! workers.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use shoal_graph::TaskError;
use shoal_graph::partition::Partition;

use crate::BagError;

/// How a file's bytes are compressed, from its name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Compression {
    None,
    Gzip,
    Zstd,
}

fn compression(path: &Path) -> Compression {
    match path.extension().and_then(|e| e.to_str()) {
        Some("gz" | "gzip") => Compression::Gzip,
        Some("zst" | "zstd") => Compression::Zstd,
        _ => Compression::None,
    }
}

fn io_error(path: &str, what: &str, e: impl std::fmt::Display) -> TaskError {
    TaskError::Failed(format!("{what} `{path}`: {e}"))
}

/// The lines of the file at `path`, without their line ends.
///
/// # Errors
/// When the file cannot be read or decompressed, or is not UTF-8 (naming
/// the line).
pub(crate) fn read_lines(path: &str) -> Result<Partition, TaskError> {
    let mut parts = Vec::new();
    for_each_chunk(path, usize::MAX, &mut |p| {
        parts.push(p);
        Ok(())
    })?;
    Ok(parts.pop().unwrap_or_else(|| Partition::from_vec(Vec::<String>::new())))
}

/// The lines of the file at `path`, given to `f` as partitions of at most
/// `lines` lines, so a task over a large file holds only a chunk at once.
///
/// # Errors
/// As [`read_lines`], or `f`'s failure.
pub(crate) fn for_each_chunk(
    path: &str,
    lines: usize,
    f: &mut dyn FnMut(Partition) -> Result<(), TaskError>,
) -> Result<(), TaskError> {
    let mut chunk = Vec::new();
    let mut any = false;
    for_each_line(path, &mut |line| {
        any = true;
        chunk.push(line.to_owned());
        if chunk.len() >= lines {
            f(Partition::from_vec(std::mem::take(&mut chunk)))?;
        }
        Ok(())
    })?;
    if !chunk.is_empty() || !any {
        f(Partition::from_vec(chunk))?;
    }
    Ok(())
}

/// Calls `f` with each line of the file at `path`, without its line end,
/// in one reused buffer, until it fails.
///
/// # Errors
/// As [`read_lines`], or `f`'s failure.
pub(crate) fn for_each_line(path: &str, f: &mut dyn FnMut(&str) -> Result<(), TaskError>) -> Result<(), TaskError> {
    let file = File::open(path).map_err(|e| io_error(path, "cannot open", e))?;
    let reader: Box<dyn Read> = match compression(Path::new(path)) {
        Compression::None => Box::new(file),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(BufReader::with_capacity(1 << 16, file))),
        Compression::Zstd => Box::new(
            ruzstd::decoding::StreamingDecoder::new(BufReader::with_capacity(1 << 16, file))
                .map_err(|e| io_error(path, "not a zstd file", e))?,
        ),
    };
    let mut reader = BufReader::with_capacity(1 << 16, reader);
    let mut line = String::new();
    let mut number = 0usize;
    loop {
        line.clear();
        number += 1;
        let n = reader.read_line(&mut line).map_err(|e| io_error(path, &format!("cannot read line {number} of"), e))?;
        if n == 0 {
            return Ok(());
        }
        let text = line.strip_suffix('\n').unwrap_or(&line);
        f(text.strip_suffix('\r').unwrap_or(text))?;
    }
}

/// Writes `lines` to `path`, one per line, compressed by its extension;
/// returns how many were written.
///
/// # Errors
/// When the file cannot be written.
pub(crate) fn write_lines(path: &str, lines: &[String]) -> Result<u64, TaskError> {
    let target = Path::new(path);
    if let Some(dir) = target.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| io_error(path, "cannot make the directory of", e))?;
    }
    let file = File::create(target).map_err(|e| io_error(path, "cannot create", e))?;
    let fail = |e: std::io::Error| io_error(path, "cannot write", e);
    match compression(target) {
        Compression::None => {
            let mut out = BufWriter::new(file);
            write_all_lines(&mut out, lines).map_err(fail)?;
            out.flush().map_err(fail)?;
        }
        Compression::Gzip => {
            let mut out = flate2::write::GzEncoder::new(BufWriter::new(file), flate2::Compression::fast());
            write_all_lines(&mut out, lines).map_err(fail)?;
            out.finish().and_then(|mut w| w.flush()).map_err(fail)?;
        }
        Compression::Zstd => {
            let mut text = Vec::new();
            write_all_lines(&mut text, lines).map_err(fail)?;
            let compressed = ruzstd::encoding::compress_to_vec(&text[..], ruzstd::encoding::CompressionLevel::Fastest);
            let mut out = BufWriter::new(file);
            out.write_all(&compressed).and_then(|()| out.flush()).map_err(fail)?;
        }
    }
    Ok(lines.len() as u64)
}

fn write_all_lines(out: &mut impl Write, lines: &[String]) -> std::io::Result<()> {
    for line in lines {
        out.write_all(line.as_bytes())?;
        out.write_all(b"\n")?;
    }
    Ok(())
}

/// The files a pattern names: a glob (`data/*.txt.gz`), or one path.
///
/// # Errors
/// [`BagError::Pattern`] for a malformed pattern, [`BagError::NoFiles`]
/// when nothing matches.
pub(crate) fn expand(pattern: &str) -> Result<Vec<PathBuf>, BagError> {
    let paths =
        glob::glob(pattern).map_err(|e| BagError::Pattern { pattern: pattern.to_string(), reason: e.to_string() })?;
    let mut files: Vec<PathBuf> = paths.filter_map(Result::ok).filter(|p| p.is_file()).collect();
    files.sort();
    if files.is_empty() {
        return Err(BagError::NoFiles { pattern: pattern.to_string() });
    }
    Ok(files)
}

/// The path of output partition `i` for a pattern with a `*`
/// (`out/part-*.txt.gz`), or in a directory.
pub(crate) fn output_path(pattern: &str, i: usize) -> String {
    if pattern.contains('*') {
        pattern.replacen('*', &i.to_string(), 1)
    } else {
        Path::new(pattern).join(format!("{i}.part")).to_string_lossy().into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_survive_every_compression() {
        let dir = std::env::temp_dir().join(format!("shoal-bag-text-{}", std::process::id()));
        let lines: Vec<String> = vec!["one".into(), "".into(), "three é".into()];
        for name in ["plain.txt", "packed.txt.gz", "packed.txt.zst"] {
            let path = dir.join(name).to_string_lossy().into_owned();
            assert_eq!(write_lines(&path, &lines).expect("writes"), 3);
            let back = read_lines(&path).expect("reads").into_vec::<String>().expect("strings");
            assert_eq!(back, lines, "{name}");
        }
        let err = read_lines(&dir.join("missing.txt").to_string_lossy()).expect_err("no such file");
        assert!(err.to_string().contains("missing.txt"), "{err}");
        std::fs::write(dir.join("bad.gz"), b"not gzip").expect("writes");
        let err = read_lines(&dir.join("bad.gz").to_string_lossy()).expect_err("not gzip");
        assert!(err.to_string().contains("bad.gz"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn patterns_name_their_outputs() {
        assert_eq!(output_path("out/part-*.txt", 3), "out/part-3.txt");
        assert_eq!(output_path("out", 2), "out/2.part");
        assert!(matches!(expand("/nonexistent/shoal/*.txt"), Err(BagError::NoFiles { .. })));
        assert!(matches!(expand("[unclosed"), Err(BagError::Pattern { .. })));
    }
}
