//! Bags against the same computation on a plain `Vec`, with random data and
//! random partitionings (empty partitions included), on the threads executor
//! and on a LocalCluster of worker processes, whose workers find the steps
//! by name. Its own test binary: the cluster lives for all its tests.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use proptest::prelude::*;
use shoal::bag::{self, Bag, Partition};
use shoal::{Client, LocalCluster};

#[shoal::remote]
fn double(x: i64) -> i64 {
    x * 2
}

#[shoal::remote]
fn divisible_by_3(x: i64) -> bool {
    x % 3 == 0
}

#[shoal::remote]
fn key_of(x: i64) -> i64 {
    x.rem_euclid(97)
}

#[shoal::remote]
fn add(a: i64, b: i64) -> i64 {
    a + b
}

#[shoal::remote]
fn digits(x: i64) -> Vec<i64> {
    x.abs().to_string().bytes().map(|b| i64::from(b - b'0')).collect()
}

#[shoal::remote]
fn total(xs: Vec<i64>) -> i64 {
    xs.iter().sum()
}

#[shoal::remote]
fn running(xs: Vec<i64>) -> Vec<i64> {
    xs.iter()
        .scan(0, |acc, x| {
            *acc += x;
            Some(*acc)
        })
        .collect()
}

#[shoal::remote]
fn count_into(acc: u64, _x: i64) -> u64 {
    acc + 1
}

#[shoal::remote]
fn add_counts(a: u64, b: u64) -> u64 {
    a + b
}

#[shoal::remote]
fn label(x: i64) -> String {
    format!("n{x}")
}

#[shoal::remote]
fn fails_on_13(x: i64) -> Result<i64, String> {
    if x == 13 { Err(format!("unlucky {x}")) } else { Ok(x) }
}

fn cluster() -> &'static Client {
    static CLUSTER: OnceLock<(LocalCluster, Client)> = OnceLock::new();
    &CLUSTER
        .get_or_init(|| {
            let cluster = LocalCluster::builder().workers(2).threads_per_worker(1).build().expect("cluster starts");
            let client = cluster.client().expect("client");
            (cluster, client)
        })
        .1
}

fn threads() -> &'static Client {
    static THREADS: OnceLock<Client> = OnceLock::new();
    THREADS.get_or_init(|| Client::builder().threads(2).build().expect("threads"))
}

fn sorted<T: Ord>(mut v: Vec<T>) -> Vec<T> {
    v.sort();
    v
}

/// Every operation on `b` (made from `xs`), against the `Vec` computation.
fn check_all(xs: &[i64], b: &Bag<i64>, client: &Client) -> Result<(), TestCaseError> {
    let c = |v: Bag<i64>| v.compute_with(client).expect("computes");
    prop_assert_eq!(b.compute_with(client).expect("computes"), xs.to_vec());
    let chain: Vec<i64> = xs.iter().map(|x| x * 2).filter(|x| x % 3 == 0).collect();
    prop_assert_eq!(c(b.map(double).filter(divisible_by_3)), chain.clone());
    prop_assert_eq!(c(b.flat_map(digits)), xs.iter().flat_map(|&x| digits(x)).collect::<Vec<_>>());
    // map_partitions sees partitions, so compare per partition.
    let per_part: Vec<i64> = b
        .to_delayed()
        .iter()
        .map(|d| d.compute_with(client).expect("partition").into_vec::<i64>().expect("i64"))
        .flat_map(running)
        .collect();
    prop_assert_eq!(c(b.map_partitions(running)), per_part);
    prop_assert_eq!(c(b.map_with(add, &b.map(double))), xs.iter().map(|x| x + 2 * x).collect::<Vec<_>>());
    prop_assert_eq!(c(b.map_value(add, 5)), xs.iter().map(|x| x + 5).collect::<Vec<_>>());
    let sum: i64 = xs.iter().sum();
    prop_assert_eq!(b.fold(add, add, Some(0)).compute_with(client).expect("fold"), sum);
    prop_assert_eq!(b.fold(count_into, add_counts, Some(0)).compute_with(client).expect("fold"), xs.len() as u64);
    prop_assert_eq!(b.reduction(total, total).compute_with(client).expect("reduction"), sum);
    prop_assert_eq!(b.sum().compute_with(client).expect("sum"), sum);
    prop_assert_eq!(b.count().compute_with(client).expect("count"), xs.len() as u64);
    match xs.iter().max() {
        Some(&m) => prop_assert_eq!(b.max().compute_with(client).expect("max"), m),
        None => prop_assert!(b.max().compute_with(client).is_err()),
    }
    if let Some(&m) = xs.iter().min() {
        prop_assert_eq!(b.min().compute_with(client).expect("min"), m);
        let mean = sum as f64 / xs.len() as f64;
        let var = xs.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / xs.len() as f64;
        prop_assert!((b.mean().compute_with(client).expect("mean") - mean).abs() < 1e-9);
        prop_assert!((b.var(0).compute_with(client).expect("var") - var).abs() < 1e-6 * (1.0 + var));
        prop_assert!((b.std(0).compute_with(client).expect("std") - var.sqrt()).abs() < 1e-6 * (1.0 + var));
    }
    let mut expected: BTreeMap<i64, i64> = BTreeMap::new();
    for &x in xs {
        *expected.entry(key_of(x)).or_default() += x;
    }
    let folded = b.foldby(key_of, add, None, add).compute_with(client).expect("foldby");
    prop_assert_eq!(sorted(folded), expected.into_iter().collect::<Vec<_>>());
    let mut groups: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
    for &x in xs {
        groups.entry(key_of(x)).or_default().push(x);
    }
    let grouped = b.groupby(key_of).compute_with(client).expect("groupby");
    prop_assert_eq!(grouped.len(), groups.len());
    let grouped: Vec<(i64, Vec<i64>)> = sorted(grouped.into_iter().map(|(k, v)| (k, sorted(v))).collect());
    prop_assert_eq!(grouped, groups.into_iter().map(|(k, v)| (k, sorted(v))).collect::<Vec<_>>());
    let mut counts: BTreeMap<i64, u64> = BTreeMap::new();
    for &x in xs {
        *counts.entry(x).or_default() += 1;
    }
    let freq = b.frequencies(true).compute_with(client).expect("frequencies");
    prop_assert!(freq.windows(2).all(|w| w[0].1 >= w[1].1), "sorted by count");
    prop_assert_eq!(sorted(freq), counts.clone().into_iter().collect::<Vec<_>>());
    let mut seen = std::collections::HashSet::new();
    let firsts: Vec<i64> = xs.iter().copied().filter(|x| seen.insert(*x)).collect();
    prop_assert_eq!(sorted(c(b.distinct())), sorted(firsts));
    prop_assert_eq!(c(b.topk(5)), sorted(xs.to_vec()).into_iter().rev().take(5).collect::<Vec<_>>());
    prop_assert_eq!(b.take_with(3, client).expect("take"), xs.iter().copied().take(3).collect::<Vec<_>>());
    let labels = b.map(label);
    let zipped = b.zip(&labels).compute_with(client).expect("zip");
    prop_assert_eq!(zipped, xs.iter().map(|&x| (x, label(x))).collect::<Vec<_>>());
    let small = bag::from_sequence_npartitions(vec![1i64, 2], 2);
    // A partition per pair of partitions, so compare as multisets.
    let product = b.product(&small).compute_with(client).expect("product");
    prop_assert_eq!(b.product(&small).npartitions(), b.npartitions() * 2);
    prop_assert_eq!(sorted(product), sorted(xs.iter().flat_map(|&x| [(x, 1), (x, 2)]).collect::<Vec<_>>()));
    for n in [1, 3, b.npartitions() * 2 + 1] {
        let r = b.repartition(n);
        prop_assert_eq!(r.npartitions(), n);
        prop_assert_eq!(c(r), xs.to_vec());
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn bags_on_threads_equal_vecs(xs in proptest::collection::vec(-500i64..500, 0..200), n in 1usize..12) {
        check_all(&xs, &bag::from_sequence_npartitions(xs.clone(), n), threads())?;
    }

    #[test]
    fn bags_on_a_cluster_equal_vecs(xs in proptest::collection::vec(-500i64..500, 0..200), n in 1usize..12) {
        check_all(&xs, &bag::from_sequence_npartitions(xs.clone(), n), cluster())?;
    }
}

#[test]
fn ranges_and_partition_sizes_cover_their_elements() {
    for client in [threads(), cluster()] {
        let r = bag::range(1_003, 7);
        assert_eq!(r.npartitions(), 7);
        assert_eq!(r.compute_with(client).expect("range"), (0..1_003).collect::<Vec<i64>>());
        let b = bag::from_sequence_partition_size(0..10i64, 3);
        assert_eq!(b.npartitions(), 4);
        assert_eq!(b.compute_with(client).expect("sized"), (0..10).collect::<Vec<i64>>());
    }
    assert_eq!(bag::from_sequence(0..250i64).npartitions(), 84);
}

#[test]
fn closures_run_on_threads_and_are_refused_by_a_cluster_by_name() {
    let offset = 7;
    let b = bag::from_sequence(0..5i64).map(move |x| x + offset);
    assert_eq!(b.compute_with(threads()).expect("closures on threads"), vec![7, 8, 9, 10, 11]);
    let err = b.compute_with(cluster()).expect_err("a closure cannot travel");
    assert!(err.to_string().contains("#[shoal::remote]"), "{err}");
}

#[test]
fn a_failing_element_fails_its_partition_with_the_message() {
    for client in [threads(), cluster()] {
        let err = bag::range(20, 4).map(fails_on_13).compute_with(client).expect_err("13 fails");
        assert!(err.to_string().contains("unlucky 13"), "{err}");
    }
}

#[test]
fn text_files_round_trip_through_the_workers() {
    let dir = std::env::temp_dir().join(format!("shoal-bag-text-test-{}", std::process::id()));
    let lines: Vec<String> = (0..1_000).map(|i| format!("line {i} of the text")).collect();
    let b = bag::from_sequence_npartitions(lines.clone(), 4);
    for (client, ext) in [(threads(), "txt"), (cluster(), "txt.gz"), (cluster(), "txt.zst")] {
        let pattern = dir.join(format!("part-*.{ext}")).to_string_lossy().into_owned();
        let written = b.to_text_files_with(&pattern, client).expect("writes");
        assert_eq!(written.len(), 4);
        let back = bag::from_text_files(&pattern).expect("files match");
        assert_eq!(back.npartitions(), 4);
        assert_eq!(sorted(back.compute_with(client).expect("reads")), sorted(lines.clone()));
    }
    let missing = dir.join("none-*.txt").to_string_lossy().into_owned();
    let err = bag::from_text_files(&missing).expect_err("no files");
    assert!(err.to_string().contains("none-*.txt"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn persisted_and_delayed_partitions_feed_later_bags() {
    let client = cluster();
    let kept = bag::range(100, 5).map(double).persist(client).expect("persists");
    assert_eq!(kept.sum().compute_with(client).expect("sum"), 9_900);
    let parts = kept.to_delayed();
    let again: Bag<i64> = bag::from_delayed(parts);
    assert_eq!(again.count().compute_with(client).expect("count"), 100);
    let direct: Bag<i64> = bag::from_delayed(vec![shoal::delayed(make_partition, (3i64,))]);
    assert_eq!(direct.compute_with(client).expect("from a remote function"), vec![0, 1, 2]);
}

#[shoal::remote]
fn make_partition(n: i64) -> Partition {
    Partition::from_vec((0..n).collect::<Vec<i64>>())
}

#[test]
fn many_keys_shuffle_between_workers_and_spill_when_memory_is_short() {
    let dir = std::env::temp_dir().join(format!("shoal-bag-spill-{}", std::process::id()));
    // 2 MB per worker, some 4 MB of groups held at once: most go to disk.
    let cluster = LocalCluster::builder()
        .workers(2)
        .threads_per_worker(1)
        .memory_limit(2_000_000)
        .memory_target(Some(0.5))
        .local_directory(&dir)
        .build()
        .expect("cluster starts");
    let client = cluster.client().expect("client");
    let n = 1_000_000i64;
    let groups = bag::range(n, 16).groupby_into(key_of, 12).persist(&client).expect("persists");
    let sizes = groups.map(group_size).compute_with(&client).expect("groups read back");
    assert_eq!(sizes.len(), 97);
    assert_eq!(sizes.iter().sum::<i64>(), n);
    let sums = groups.map(group_sum).compute_with(&client).expect("groups read back");
    let expected: i64 = (0..n).sum();
    assert_eq!(sums.iter().sum::<i64>(), expected);
    drop((groups, client, cluster));
    let _ = std::fs::remove_dir_all(&dir);
}

#[shoal::remote]
fn group_size(group: (i64, Vec<i64>)) -> i64 {
    group.1.len() as i64
}

#[shoal::remote]
fn group_sum(group: (i64, Vec<i64>)) -> i64 {
    group.1.iter().sum()
}

#[shoal::remote]
fn shout(line: String) -> String {
    line.to_uppercase()
}

#[test]
fn word_counts_agree_on_every_path() {
    let dir = std::env::temp_dir().join(format!("shoal-bag-words-{}", std::process::id()));
    let lines: Vec<String> = (0..3_000).map(|i| format!("the {} fox  jumps\tover {}", i % 7, i % 13)).collect();
    let mut expected: BTreeMap<String, u64> = BTreeMap::new();
    for w in lines.iter().flat_map(|l| l.split_whitespace()) {
        *expected.entry(w.to_string()).or_default() += 1;
    }
    let expected: Vec<(String, u64)> = expected.into_iter().collect();
    let pattern = dir.join("words-*.txt.gz").to_string_lossy().into_owned();
    bag::from_sequence_npartitions(lines.clone(), 3).to_text_files_with(&pattern, threads()).expect("writes");
    for client in [threads(), cluster()] {
        let files = bag::from_text_files(&pattern).expect("files");
        let in_memory = bag::from_sequence_npartitions(lines.clone(), 5);
        // Straight from the files (no copy per word), after a step (chunks
        // of lines), and from memory.
        assert_eq!(sorted(files.split_whitespace().frequencies(false).compute_with(client).expect("files")), expected);
        assert_eq!(
            sorted(in_memory.split_whitespace().frequencies(false).compute_with(client).expect("memory")),
            expected
        );
        let shouted = sorted(files.map(shout).split_whitespace().frequencies(false).compute_with(client).expect("map"));
        let upper: Vec<(String, u64)> = expected.iter().map(|(w, n)| (w.to_uppercase(), *n)).collect();
        assert_eq!(shouted, upper);
        let words = files.split_whitespace();
        assert_eq!(words.count().compute_with(client).expect("count"), 18_000);
        assert_eq!(words.take_with(2, client).expect("take"), ["the", "0"]);
    }
    let _ = std::fs::remove_dir_all(&dir);
}
