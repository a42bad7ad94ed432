//! Benchmarks of bags: the foldby pipeline, a word count over a
//! gzip corpus against a plain Rust program, and a shuffle.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, ensure};
use serde_json::{Map, Value, json};
use shoal::bag;
use shoal::{Client, LocalCluster};

use super::{Benchmark, Sample, param_u64, timed};

pub(super) fn benchmarks() -> Vec<Benchmark> {
    vec![
        Benchmark {
            name: "bag-foldby",
            about: "range(n) in 20 partitions -> map x2 -> filter divisible by 3 -> foldby(x % 100, add), on a LocalCluster 2x1",
            unit: "elements/s",
            params: |quick| vec![json!({"n": if quick { 200_000 } else { 2_000_000 }, "npartitions": 20})],
            run: foldby,
        },
        Benchmark {
            name: "bag-wordcount",
            about: "word frequencies of a generated corpus in gzip files: bag (split_whitespace, or flat_map of a remote fn) on a LocalCluster 2x1, or one Rust thread",
            unit: "bytes/s",
            params: |quick| {
                let (mb, files) = if quick { (64, 8) } else { (1024, 64) };
                ["bag", "bag-flat_map", "rust"].map(|via| json!({"mb": mb, "files": files, "via": via})).to_vec()
            },
            run: wordcount,
        },
        Benchmark {
            name: "bag-groupby",
            about: "groupby shuffle of n (key, value) pairs into 100000 keys, 20 partitions, on a LocalCluster 2x1",
            unit: "pairs/s",
            params: |quick| {
                vec![json!({"n": if quick { 1_000_000 } else { 10_000_000 }, "keys": 100_000, "npartitions": 20})]
            },
            run: groupby,
        },
    ]
}

#[shoal::remote]
fn double(x: i64) -> i64 {
    x * 2
}

#[shoal::remote]
fn divisible_by_3(x: i64) -> bool {
    x % 3 == 0
}

#[shoal::remote]
fn mod_100(x: i64) -> i64 {
    x % 100
}

#[shoal::remote]
fn add(a: i64, b: i64) -> i64 {
    a + b
}

#[shoal::remote]
fn words(line: String) -> Vec<String> {
    line.split_whitespace().map(str::to_owned).collect()
}

#[shoal::remote]
fn pair_of(x: i64) -> (i64, i64) {
    (x.wrapping_mul(2_654_435_761) % 100_000, x)
}

#[shoal::remote]
fn first(pair: (i64, i64)) -> i64 {
    pair.0
}

#[shoal::remote]
fn group_len(group: (i64, Vec<(i64, i64)>)) -> u64 {
    group.1.len() as u64
}

/// Peak resident memory of a worker process, in bytes.
#[shoal::remote]
fn worker_peak_rss() -> u64 {
    super::peak_rss_bytes()
}

fn cluster() -> anyhow::Result<(LocalCluster, Client)> {
    let cluster = LocalCluster::builder().workers(2).threads_per_worker(1).build().context("the cluster starts")?;
    let client = cluster.client().context("the client connects")?;
    Ok((cluster, client))
}

/// Every process's peak RSS: this one, and each worker's.
fn peaks(client: &Client, extra: &mut Map<String, Value>) -> anyhow::Result<()> {
    let workers = client.run(worker_peak_rss, ()).context("the workers report their memory")?;
    extra.insert("worker_peak_rss_bytes".into(), json!(workers.values().collect::<Vec<_>>()));
    extra.insert("client_peak_rss_bytes".into(), json!(super::peak_rss_bytes()));
    Ok(())
}

fn foldby(params: &Value) -> anyhow::Result<Sample> {
    let n = param_u64(params, "n")? as i64;
    let parts = param_u64(params, "npartitions")? as usize;
    let (_cluster, client) = cluster()?;
    let (seconds, sums) = timed(|| {
        bag::range(n, parts).map(double).filter(divisible_by_3).foldby(mod_100, add, None, add).compute_with(&client)
    });
    let sums = sums?;
    let mut expected = std::collections::BTreeMap::new();
    for x in (0..n).map(|x| 2 * x).filter(|x| x % 3 == 0) {
        *expected.entry(x % 100).or_insert(0i64) += x;
    }
    let got: std::collections::BTreeMap<i64, i64> = sums.into_iter().collect();
    ensure!(got == expected, "wrong foldby result");
    Ok(Sample { seconds, items: Some(n as f64), extra: Map::new() })
}

/// The corpus directory for `mb` megabytes in `files` files, shared with
/// the peers script, made once.
fn corpus(mb: u64, files: u64) -> anyhow::Result<(PathBuf, u64)> {
    let dir = std::env::temp_dir().join(format!("shoal-bench-corpus-{mb}mb-{files}files"));
    let done = dir.join("done");
    if let Ok(text) = std::fs::read_to_string(&done) {
        return Ok((dir, text.trim().parse().context("the corpus's size file")?));
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot make {}", dir.display()))?;
    // A vocabulary of 20 000 words, drawn with a skew (as text is).
    let vocabulary: Vec<String> =
        (0..20_000u64).map(|i| format!("w{:x}", i.wrapping_mul(0x9E37_79B9) % 1_000_003)).collect();
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let per_file = mb * 1_000_000 / files;
    let mut total = 0u64;
    for f in 0..files {
        let path = dir.join(format!("part-{f:04}.txt.gz"));
        let file = std::fs::File::create(&path).with_context(|| format!("cannot create {}", path.display()))?;
        let mut out = flate2::write::GzEncoder::new(std::io::BufWriter::new(file), flate2::Compression::fast());
        let mut written = 0u64;
        let mut line = String::new();
        while written < per_file {
            line.clear();
            for w in 0..12 {
                let r = next();
                // Squaring a uniform number skews towards the first words.
                let u = (r >> 11) as f64 / (1u64 << 53) as f64;
                let word = &vocabulary[((u * u) * vocabulary.len() as f64) as usize % vocabulary.len()];
                if w > 0 {
                    line.push(' ');
                }
                line.push_str(word);
            }
            line.push('\n');
            out.write_all(line.as_bytes())?;
            written += line.len() as u64;
        }
        out.finish()?.flush()?;
        total += written;
    }
    std::fs::write(&done, total.to_string())?;
    Ok((dir, total))
}

/// The single-threaded Rust reference: read, split, count.
fn count_words(files: &[PathBuf]) -> anyhow::Result<rustc_hash::FxHashMap<String, u64>> {
    let mut counts: rustc_hash::FxHashMap<String, u64> = rustc_hash::FxHashMap::default();
    let mut line = String::new();
    for path in files {
        let file = std::fs::File::open(path)?;
        let mut reader = BufReader::with_capacity(1 << 16, flate2::read::MultiGzDecoder::new(BufReader::new(file)));
        loop {
            line.clear();
            if reader.read_line(&mut line)? == 0 {
                break;
            }
            for word in line.split_whitespace() {
                match counts.get_mut(word) {
                    Some(n) => *n += 1,
                    None => {
                        counts.insert(word.to_owned(), 1);
                    }
                }
            }
        }
    }
    Ok(counts)
}

fn wordcount(params: &Value) -> anyhow::Result<Sample> {
    let (mb, files) = (param_u64(params, "mb")?, param_u64(params, "files")?);
    let (dir, bytes) = corpus(mb, files)?;
    let pattern = dir.join("part-*.txt.gz").to_string_lossy().into_owned();
    let mut extra = Map::new();
    let via = params.get("via").and_then(Value::as_str).unwrap_or("bag");
    let (seconds, distinct, total) = match via {
        "rust" => {
            let paths: Vec<PathBuf> = glob_files(&dir)?;
            let (seconds, counts) = timed(|| count_words(&paths));
            let counts = counts?;
            (seconds, counts.len(), counts.values().sum::<u64>())
        }
        "bag" | "bag-flat_map" => {
            let (_cluster, client) = cluster()?;
            let (seconds, counts) = timed(|| -> anyhow::Result<Vec<(String, u64)>> {
                let lines = bag::from_text_files(&pattern)?;
                let words = match via {
                    "bag" => lines.split_whitespace(),
                    _ => lines.flat_map(words),
                };
                Ok(words.frequencies(false).compute_with(&client)?)
            });
            let counts = counts?;
            peaks(&client, &mut extra)?;
            (seconds, counts.len(), counts.iter().map(|c| c.1).sum::<u64>())
        }
        other => anyhow::bail!("via {other:?} is not \"bag\", \"bag-flat_map\" or \"rust\""),
    };
    ensure!(distinct > 1_000 && total > bytes / 20, "implausible counts: {distinct} words, {total} in all");
    extra.insert("distinct_words".into(), json!(distinct));
    extra.insert("words".into(), json!(total));
    extra.insert("mb_per_s".into(), json!(bytes as f64 / seconds / 1e6));
    Ok(Sample { seconds, items: Some(bytes as f64), extra })
}

fn glob_files(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "gz"))
        .collect();
    paths.sort();
    Ok(paths)
}

fn groupby(params: &Value) -> anyhow::Result<Sample> {
    let n = param_u64(params, "n")? as i64;
    let parts = param_u64(params, "npartitions")? as usize;
    let (_cluster, client) = cluster()?;
    let mut extra = Map::new();
    let (seconds, sizes) =
        timed(|| bag::range(n, parts).map(pair_of).groupby(first).map(group_len).compute_with(&client));
    let sizes = sizes?;
    ensure!(sizes.iter().sum::<u64>() == n as u64, "pairs lost in the shuffle");
    extra.insert("groups".into(), json!(sizes.len()));
    peaks(&client, &mut extra)?;
    Ok(Sample { seconds, items: Some(n as f64), extra })
}
