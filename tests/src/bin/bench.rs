//! `make bench`: every figure of the benchmarks issue, measured on this machine, printed as
//! a table and written to `bench/results.json`. `--size smoke` runs each section small.

use mx_operator_tests::bench::{
    self, Figure, Size, cluster, drift, maps, outage, recipients, sources,
};
use std::path::PathBuf;
use std::time::Duration;

fn main() -> std::process::ExitCode {
    let mut size = Size::Full;
    let mut out = PathBuf::from("bench/results.json");
    let mut only: Option<String> = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--size" => match args.next().as_deref() {
                Some("smoke") => size = Size::Smoke,
                Some("full") => size = Size::Full,
                other => return usage(&format!("unknown size {other:?}")),
            },
            "--only" => match args.next() {
                Some(section)
                    if [
                        "latency",
                        "scale",
                        "drift",
                        "maps",
                        "outage",
                        "sources",
                        "hanging",
                        "recipients",
                    ]
                    .contains(&section.as_str()) =>
                {
                    only = Some(section)
                }
                other => return usage(&format!("unknown section {other:?}")),
            },
            "--out" => match args.next() {
                Some(path) => out = PathBuf::from(path),
                None => return usage("--out needs a path"),
            },
            other => return usage(&format!("unknown argument {other:?}")),
        }
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => return failed(&error.to_string()),
    };
    match runtime.block_on(run(size, only.as_deref())) {
        Ok(figures) => report(size, &figures, &out),
        Err(error) => failed(&error),
    }
}

fn usage(problem: &str) -> std::process::ExitCode {
    eprintln!(
        "bench: {problem}\nusage: bench [--size smoke|full] [--only latency|scale|drift|maps|outage|sources|hanging|recipients] [--out FILE]"
    );
    std::process::ExitCode::from(2)
}

fn failed(error: &str) -> std::process::ExitCode {
    eprintln!("bench failed: {error}");
    std::process::ExitCode::FAILURE
}

async fn run(size: Size, only: Option<&str>) -> Result<Vec<Figure>, String> {
    let dir = std::env::temp_dir().join(format!("mx-operator-bench-{}", std::process::id()));
    let (onboard, changes, scale, drift_sizes, recipients) = match size {
        Size::Smoke => (5, 5, vec![100], vec![100], 10_000),
        Size::Full => (50, 50, vec![1_000, 10_000], vec![1_000, 10_000], 1_000_000),
    };
    // Domains, messages, and how long the full queue is watched standing still.
    let (outage_domains, outage_messages, standing) = match size {
        Size::Smoke => (10, 100, Duration::from_secs(30)),
        Size::Full => (100, 1_000, Duration::from_secs(180)),
    };
    let people = match size {
        Size::Smoke => 10_000,
        Size::Full => 1_000_000,
    };
    // Addresses per domain, further domains over HTTP, and changes timed.
    let (per_domain, http_domains, recipient_changes) = match size {
        Size::Smoke => (50_000, 2, 6),
        Size::Full => (1_000_000, 9, 20),
    };
    let wanted = |section: &str| only.is_none_or(|o| o == section);
    let mut figures = vec![];
    if wanted("latency") {
        eprintln!("bench: onboarding and recipient changes ...");
        figures.extend(cluster::latency(&dir, onboard, changes).await?);
    }
    if wanted("scale") {
        for count in scale {
            eprintln!("bench: scale, {count} domains ...");
            figures.extend(cluster::scale(&dir, count, Duration::from_secs(900)).await?);
        }
    }
    if wanted("drift") {
        eprintln!("bench: drift cycles ...");
        figures.extend(drift::run(&dir, &drift_sizes).await?);
    }
    if wanted("maps") {
        eprintln!("bench: gateway maps for {recipients} recipients ...");
        figures.extend(maps::run(&dir, recipients).await?);
    }
    if wanted("outage") {
        eprintln!(
            "bench: {outage_messages} messages queued for {outage_domains} domains in an outage ..."
        );
        figures.extend(outage::run(&dir, outage_domains, outage_messages, standing).await?);
    }
    if wanted("sources") {
        eprintln!("bench: recipient sources with {people} addresses ...");
        figures.extend(sources::run(&dir, people, 10).await?);
    }
    if wanted("hanging") {
        let count = match size {
            Size::Smoke => 10,
            Size::Full => 50,
        };
        eprintln!("bench: a new domain beside {count} sources that never answer ...");
        figures.extend(sources::hanging(&dir, count).await?);
    }
    if wanted("recipients") {
        eprintln!(
            "bench: {} recipients on one gateway, end to end ...",
            per_domain * (http_domains + 1)
        );
        figures.extend(recipients::run(&dir, per_domain, http_domains, recipient_changes).await?);
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(figures)
}

fn report(size: Size, figures: &[Figure], out: &PathBuf) -> std::process::ExitCode {
    print!("{}", bench::table(figures));
    let commit = std::process::Command::new("git")
        .args(["rev-parse", "HEAD"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let results = serde_json::json!({
        "size": format!("{size:?}").to_lowercase(),
        "commit": commit,
        "machine": bench::machine(),
        "figures": figures,
    });
    if let Some(parent) = out.parent() {
        let _ = std::fs::create_dir_all(parent);
    }
    let text = serde_json::to_string_pretty(&results).unwrap_or_default();
    if let Err(error) = std::fs::write(out, text + "\n") {
        return failed(&format!("writing {}: {error}", out.display()));
    }
    println!("\nwritten to {}", out.display());
    std::process::ExitCode::SUCCESS
}
