//! One full drift cycle over N managed domains against Knot: for each domain the MX at the
//! zone's server and the public MX (both Knot here), with the operator's default
//! concurrency. SMTP probes are left out: their cost is the gateway's, per domain.

use super::{Figure, Spread};
use crate::knot::Knot;
use kube::runtime::reflector::ObjectRef;
use mx_operator::api::MailDomain;
use mx_operator::dns::Mx;
use mx_operator::drift::check::NoReplicas;
use mx_operator::drift::metrics::DriftMetrics;
use mx_operator::drift::{CheckSettings, Drift, DriftSettings, Expectation};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

const SECTION: &str = "4. Drift cycle (authoritative + public MX per domain, Knot, concurrency 32)";
const OURS: &str = "edge.mx.example.net";
/// The operator's default (`--drift-concurrency`).
const CONCURRENCY: usize = 32;
const CYCLES: usize = 3;

pub async fn run(dir: &Path, sizes: &[usize]) -> Result<Vec<Figure>, String> {
    let mut figures = vec![];
    for &domains in sizes {
        let mut zone = String::new();
        for i in 0..domains {
            zone.push_str(&format!(
                "$ORIGIN d{i:05}.bench.test.\n@ MX 10 mail.d{i:05}.bench.test.\n@ MX 20 {OURS}.\n"
            ));
        }
        let knot = Knot::start(
            &dir.join(format!("knot-drift-{domains}")),
            &[("bench.test", &zone)],
        )
        .map_err(|e| e.to_string())?;
        let drift = Drift::new(
            DriftSettings {
                interval: Duration::from_secs(300),
                concurrency: CONCURRENCY,
                dns_timeout: Duration::from_secs(3),
                checks: CheckSettings {
                    resolvers: vec![knot.address],
                    smtp: false,
                    smtp_timeout: Duration::from_secs(5),
                    confirm_after: Duration::from_secs(1),
                },
            },
            Arc::new(NoReplicas),
            DriftMetrics::default(),
        );
        for i in 0..domains {
            let name = format!("d{i:05}");
            drift.expect(
                ObjectRef::<MailDomain>::new(&name).within("bench"),
                Expectation {
                    domain: format!("{name}.bench.test"),
                    ours: vec![OURS.into()],
                    primary_host: format!("mail.{name}.bench.test"),
                    primary_port: 25,
                    authoritative: Some((knot.address, Mx::new(20, OURS))),
                    probe: None,
                },
            );
        }
        let mut took = vec![];
        for _ in 0..CYCLES {
            let report = drift.cycle().await;
            if report.checked != domains {
                return Err(format!("checked {} of {domains} domains", report.checked));
            }
            took.push(report.took);
        }
        // Every domain must have been seen pointing at us: a cycle of failed queries is fast too.
        let wrong = (0..domains)
            .filter(|i| {
                let key = ObjectRef::<MailDomain>::new(&format!("d{i:05}")).within("bench");
                drift.observation(&key).is_none_or(|o| {
                    o.public != mx_operator::drift::decide::MxState::Ours
                        || o.authoritative_ok != Some(true)
                })
            })
            .count();
        if wrong > 0 {
            return Err(format!(
                "{wrong} of {domains} domains were not seen as ours"
            ));
        }
        let spread = Spread::of(&took);
        let label = format!("{domains} domains: one cycle");
        let mut these = spread.figures(SECTION, &label, false);
        if domains >= 10_000 {
            let median = these.remove(1).at_most(30.0);
            these.insert(1, median);
        }
        figures.extend(these);
        figures.push(Figure::new(
            SECTION,
            format!("{domains} domains: DNS queries per second (median cycle)"),
            (2 * domains) as f64 / spread.median,
            "q/s",
        ));
    }
    Ok(figures)
}
