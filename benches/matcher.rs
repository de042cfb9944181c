//! Matcher benchmarks: compile time, snapshot bytes per name, lookup time
//! for hits and misses on 2- and 5-label names, and opening a saved
//! snapshot, at 3,500 and 1,000,000 generated names. The naive reference
//! matcher (a hash map probed per ancestor, the design of hickory's
//! built-in blocklist) runs in the same process as the baseline.
//!
//! Run: `cargo bench --bench matcher` (add `-- lookup` to filter);
//! `MATCHER_SIZES=10000,100000,1000000,10000000` picks the sizes (default
//! 3500,1000000). The sizes print once per run as
//! `size N: snapshot B bytes = X bytes/name`. `compile/N/load_text` is the
//! cold-start path: a plain text file of the names through `list::load`,
//! which streams names into the builder as it parses.

use std::collections::HashSet;
use std::hint::black_box;
use std::path::PathBuf;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sinkhole::list::{
    Format, ListOptions, ParsedList, Rule, Scope, Snapshot, Target, compile, load,
};
use sinkhole::policy::Action;

const WORDS: &[&str] = &[
    "bit", "coin", "crypto", "chain", "block", "token", "satoshi", "ether", "doge", "moon",
    "rocket", "hodl", "whale", "bull", "bear", "mint", "stake", "yield", "swap", "trade", "vault",
    "wallet", "ledger", "hash", "miner", "node", "defi", "gold", "quantum", "nova", "stellar",
    "astro", "galaxy", "orbit", "apex", "prime", "alpha", "beta", "gamma", "delta", "sigma",
    "omega", "zen", "flux", "spark", "fast", "quick", "instant", "safe", "secure", "trust",
    "royal", "king", "crown", "empire", "global", "world", "meta", "neo", "future", "digital",
    "cyber", "cloud", "sky", "star", "solar", "pro", "max", "ultra", "mega", "hyper", "super",
    "turbo", "fox", "wolf", "lion", "tiger", "eagle", "falcon", "phoenix", "dragon", "titan",
    "atlas", "zeus", "apollo", "luna", "terra", "cosmo", "atom", "algo", "ripple", "link", "cake",
    "curve", "liquid", "flash", "rapid", "pay", "cash", "money",
];
const SUFFIXES: &[&str] = &[
    "-exchange",
    "exchange",
    "-ex",
    "-swap",
    "swap",
    "-trade",
    "-dex",
    "-pay",
    "-coin",
    "",
];
const TLDS: &[&str] = &[
    "com", "io", "kz", "net", "org", "xyz", "co", "app", "exchange", "finance", "me", "biz",
    "info", "pro", "top", "site", "online", "cc",
];

fn gen_names(n: usize, seed: u64) -> Vec<String> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut seen = HashSet::with_capacity(n);
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let mut name = String::with_capacity(32);
        name.push_str(WORDS[rng.random_range(0..WORDS.len())]);
        name.push_str(WORDS[rng.random_range(0..WORDS.len())]);
        if rng.random_bool(0.5) {
            name.push_str(&rng.random_range(0..1000u32).to_string());
        }
        name.push_str(SUFFIXES[rng.random_range(0..SUFFIXES.len())]);
        name.push('.');
        name.push_str(TLDS[rng.random_range(0..TLDS.len())]);
        if seen.insert(name.clone()) {
            out.push(name);
        }
    }
    out
}

fn as_list(names: &[String]) -> ParsedList {
    ParsedList {
        name: "bench".into(),
        path: PathBuf::from("bench.txt"),
        format: Format::Plain,
        rules: names
            .iter()
            .enumerate()
            .map(|(i, n)| Rule {
                target: Target::Name {
                    name: n.clone(),
                    scope: Scope::Subtree,
                },
                action: Action::Block,
                local_data: Vec::new(),
                line: i as u32 + 1,
                meta: None,
            })
            .collect(),
        skipped: vec![],
    }
}

/// The baseline: probe a hash set once per ancestor, allocating a
/// lowercase copy as a naive implementation does.
fn reference_lookup(set: &HashSet<String>, name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    let mut rest = name.as_str();
    loop {
        if set.contains(rest) {
            return true;
        }
        match rest.find('.') {
            Some(i) => rest = &rest[i + 1..],
            None => return false,
        }
    }
}

fn bench_size(c: &mut Criterion, n: usize) {
    let names = gen_names(n, 20261121);
    let list = vec![as_list(&names)];
    let snap = compile(&list).expect("compile");
    println!(
        "size {n}: snapshot {} bytes = {:.2} bytes/name (fst {:.2} bytes/name)",
        snap.byte_len(),
        snap.byte_len() as f64 / n as f64,
        snap.fst_len() as f64 / n as f64
    );
    let set: HashSet<String> = names.iter().cloned().collect();

    let mut g = c.benchmark_group(format!("compile/{n}"));
    g.sample_size(10);
    g.bench_function("snapshot", |b| {
        b.iter(|| compile(black_box(&list)).expect("compile"))
    });
    g.bench_function("reference_hashset", |b| {
        b.iter(|| black_box(names.iter().cloned().collect::<HashSet<String>>()))
    });
    let text_dir = tempfile::tempdir().expect("tempdir");
    let text = text_dir.path().join("bench.txt");
    std::fs::write(&text, names.join("\n")).expect("write list");
    let paths = vec![text];
    let options = |_: &std::path::Path| ListOptions::default();
    g.bench_function("load_text", |b| {
        b.iter(|| load(black_box(&paths), &options, 1, None).expect("load"))
    });
    g.finish();

    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("snap.bin");
    snap.save(&path).expect("save");
    let mut g = c.benchmark_group(format!("open/{n}"));
    g.sample_size(20);
    g.bench_function("mmap_verify", |b| {
        b.iter(|| Snapshot::open(black_box(&path)).expect("open"))
    });
    g.finish();

    // Query mixes: hits and misses at 2 and 5 labels.
    let hits2: Vec<String> = names.iter().take(1024).cloned().collect();
    let hits5: Vec<String> = names
        .iter()
        .take(1024)
        .map(|n| format!("a.b.www.{n}"))
        .collect();
    let misses = gen_names(2048, 7);
    let misses2: Vec<String> = misses
        .iter()
        .filter(|m| !set.contains(*m))
        .take(1024)
        .cloned()
        .collect();
    let misses5: Vec<String> = misses2.iter().map(|n| format!("a.b.www.{n}")).collect();
    let mut g = c.benchmark_group(format!("lookup/{n}"));
    for (label, qs) in [
        ("hit2", &hits2),
        ("hit5", &hits5),
        ("miss2", &misses2),
        ("miss5", &misses5),
    ] {
        let expect = label.starts_with("hit");
        g.bench_function(format!("snapshot/{label}"), |b| {
            let mut i = 0;
            b.iter(|| {
                i = (i + 1) % qs.len();
                let r = snap.lookup(black_box(qs[i].as_bytes()));
                debug_assert_eq!(r.is_some(), expect);
                r
            })
        });
        g.bench_function(format!("reference/{label}"), |b| {
            let mut i = 0;
            b.iter(|| {
                i = (i + 1) % qs.len();
                reference_lookup(&set, black_box(&qs[i]))
            })
        });
    }
    g.finish();
    let _ = BatchSize::SmallInput;
}

fn benches(c: &mut Criterion) {
    let sizes = std::env::var("MATCHER_SIZES").unwrap_or_else(|_| "3500,1000000".into());
    for n in sizes
        .split(',')
        .filter_map(|s| s.trim().parse::<usize>().ok())
    {
        bench_size(c, n);
    }
}

criterion_group!(matcher, benches);
criterion_main!(matcher);
