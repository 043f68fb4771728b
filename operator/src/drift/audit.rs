//! `mx-operator audit`: the drift checks over a list of domains, without a cluster — for
//! finding the zones whose MX and relay configuration disagree.

use super::check::{CheckSettings, NoReplicas, ProbePlan, ProbeTarget, probe_gateway};
use super::decide::{Expect, MxState, classify};
use crate::api::MailDomain;
use crate::api::validate::{normalize_address, normalize_domain, normalize_host};
use crate::net::MxLookup;
use crate::net::Network;
use futures::StreamExt;
use serde::Serialize;
use std::net::SocketAddr;
use std::time::Duration;

/// One domain to audit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditDomain {
    pub domain: String,
    /// The customer's own mail server, when known: tells a missing record from a move.
    pub primary: Option<String>,
    /// An address that exists, for the probe.
    pub recipient: Option<String>,
    pub catch_all: bool,
}

/// The input's format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum InputFormat {
    /// By the file name: `.yaml`/`.yml` MailDomains, `.csv`, anything else a list.
    Auto,
    /// One domain per line; `#` starts a comment.
    List,
    /// `domain[,primary[,recipient]]` per line, recipient `*` for catch-all; a header line
    /// starting with `domain` is skipped.
    Csv,
    /// MailDomain objects (other kinds are skipped).
    Yaml,
}

impl InputFormat {
    pub fn for_path(self, path: &str) -> Self {
        match self {
            Self::Auto if path.ends_with(".yaml") || path.ends_with(".yml") => Self::Yaml,
            Self::Auto if path.ends_with(".csv") => Self::Csv,
            Self::Auto => Self::List,
            chosen => chosen,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("line {line}: {message}")]
    Line { line: usize, message: String },
    #[error("reading the MailDomains: {0}")]
    Yaml(String),
    #[error("MailDomain {name}: {message}")]
    MailDomain { name: String, message: String },
    #[error("the input names no domains")]
    Empty,
}

/// Reads the domains to audit; every domain is checked like a MailDomain's.
pub fn parse(text: &str, format: InputFormat) -> Result<Vec<AuditDomain>, AuditError> {
    let domains = match format {
        InputFormat::Yaml => parse_yaml(text)?,
        InputFormat::Csv => parse_lines(text, true)?,
        InputFormat::List | InputFormat::Auto => parse_lines(text, false)?,
    };
    if domains.is_empty() {
        return Err(AuditError::Empty);
    }
    Ok(domains)
}

fn parse_lines(text: &str, csv: bool) -> Result<Vec<AuditDomain>, AuditError> {
    let mut domains = vec![];
    for (index, raw) in text.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or_default().trim();
        if line.is_empty() {
            continue;
        }
        let fail = |message: String| AuditError::Line {
            line: index + 1,
            message,
        };
        let fields: Vec<&str> = if csv {
            line.split(',').map(str::trim).collect()
        } else {
            vec![line]
        };
        if csv && index == 0 && fields[0].eq_ignore_ascii_case("domain") {
            continue;
        }
        if fields.len() > 3 {
            return Err(fail(
                "more than three fields (domain,primary,recipient)".into(),
            ));
        }
        let domain = normalize_domain(fields[0]).map_err(&fail)?;
        let primary = match fields.get(1).filter(|f| !f.is_empty()) {
            Some(host) => Some(normalize_host(host).map_err(&fail)?),
            None => None,
        };
        let (recipient, catch_all) = match fields.get(2).filter(|f| !f.is_empty()) {
            Some(&"*") => (None, true),
            Some(address) => (
                Some(normalize_address(address, &domain).map_err(&fail)?),
                false,
            ),
            None => (None, false),
        };
        domains.push(AuditDomain {
            domain,
            primary,
            recipient,
            catch_all,
        });
    }
    Ok(domains)
}

fn parse_yaml(text: &str) -> Result<Vec<AuditDomain>, AuditError> {
    let documents: Vec<serde_json::Value> =
        serde_saphyr::from_multiple(text).map_err(|e| AuditError::Yaml(e.to_string()))?;
    let mut domains = vec![];
    for document in documents {
        if document.get("kind").and_then(|k| k.as_str()) != Some("MailDomain") {
            continue;
        }
        let object: MailDomain =
            serde_json::from_value(document).map_err(|e| AuditError::Yaml(e.to_string()))?;
        let name = object.metadata.name.clone().unwrap_or_default();
        let invalid = |message: String| AuditError::MailDomain {
            name: name.clone(),
            message,
        };
        object
            .spec
            .validate()
            .map_err(|problems| invalid(problems.to_string()))?;
        let spec = &object.spec;
        let domain = normalize_domain(&spec.domain).map_err(&invalid)?;
        let recipient = spec
            .recipients
            .inline
            .iter()
            .find_map(|a| normalize_address(a, &domain).ok());
        domains.push(AuditDomain {
            primary: normalize_host(&spec.primary.host).ok(),
            recipient,
            catch_all: spec.recipients.catch_all,
            domain,
        });
    }
    Ok(domains)
}

/// One thing wrong with a domain (or `Ok`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum State {
    Ok,
    /// The MX does not name the gateway but the domain is still with the customer (its
    /// MX names the primary, or it has no MX at all): the zone lacks our record.
    MxMissing,
    /// The MX names other hosts only: the domain has moved away.
    Departed,
    Nxdomain,
    /// No resolver answered: unknown, not a departure.
    DnsError,
    /// The gateway does not accept the domain's known recipient (or refuses the domain).
    GatewayNotAccepting,
    /// The gateway accepts a random recipient although the domain is not catch-all.
    BackscatterRisk,
    OpenRelay,
    /// The gateway could not be asked.
    ProbeFailed,
}

impl State {
    fn name(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::MxMissing => "mx-missing",
            Self::Departed => "departed",
            Self::Nxdomain => "nxdomain",
            Self::DnsError => "dns-error",
            Self::GatewayNotAccepting => "gateway-not-accepting",
            Self::BackscatterRisk => "backscatter-risk",
            Self::OpenRelay => "open-relay",
            Self::ProbeFailed => "probe-failed",
        }
    }
}

/// In JSON reports a state is its name, as in the table.
impl Serialize for State {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name())
    }
}

/// The audit's finding for one domain.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub domain: String,
    /// Every problem found, or just `ok`.
    pub states: Vec<State>,
    /// The public MX seen (`preference host`).
    pub mx: Vec<String>,
    pub detail: String,
}

impl Finding {
    pub fn is_ok(&self) -> bool {
        self.states == [State::Ok]
    }
}

fn dns_state(state: &MxState) -> Option<State> {
    match state {
        MxState::Ours => None,
        MxState::OurMxMissing(_) | MxState::NoMx => Some(State::MxMissing),
        MxState::Elsewhere(_) => Some(State::Departed),
        MxState::NxDomain => Some(State::Nxdomain),
        MxState::Unknown(_) | MxState::Repairing => Some(State::DnsError),
    }
}

fn probe_state(reason: &str) -> Option<State> {
    match reason {
        "Verified" => None,
        "OpenRelay" => Some(State::OpenRelay),
        "BackscatterRisk" => Some(State::BackscatterRisk),
        "ProbeFailed" => Some(State::ProbeFailed),
        _ => Some(State::GatewayNotAccepting),
    }
}

/// How the audit runs.
#[derive(Clone, Debug)]
pub struct AuditSettings {
    /// The gateway host names the MX must name.
    pub ours: Vec<String>,
    pub resolvers: Vec<SocketAddr>,
    /// The gateway's SMTP address to probe, `host:port`.
    pub probe: Option<String>,
    pub concurrency: usize,
    pub dns_timeout: Duration,
    pub smtp_timeout: Duration,
}

/// Audits every domain, in input order.
pub async fn run(domains: &[AuditDomain], settings: &AuditSettings) -> Vec<Finding> {
    let network = Network::real(settings.dns_timeout);
    let checks = CheckSettings {
        resolvers: settings.resolvers.clone(),
        smtp: settings.probe.is_some(),
        smtp_timeout: settings.smtp_timeout,
        confirm_after: Duration::ZERO,
    };
    let ours: Vec<String> = settings
        .ours
        .iter()
        .filter_map(|h| normalize_domain(h).ok())
        .collect();
    let (network, checks, ours) = (&network, &checks, &ours);
    futures::stream::iter(domains)
        .map(|domain| async move {
            let plan = settings.probe.as_ref().map(|target| ProbePlan {
                target: ProbeTarget::Address(target.clone()),
                helo: ours.first().cloned().unwrap_or_else(|| "localhost".into()),
                domain: domain.domain.clone(),
                known: domain.recipient.clone(),
                expect: Expect::Accept,
                catch_all: domain.catch_all,
            });
            finding(network, checks, ours, domain, plan).await
        })
        .buffered(settings.concurrency.max(1))
        .collect()
        .await
}

async fn finding(
    network: &Network,
    checks: &CheckSettings,
    ours: &[String],
    domain: &AuditDomain,
    plan: Option<ProbePlan>,
) -> Finding {
    let lookup = network
        .resolver
        .mx_any(&checks.resolvers, &domain.domain)
        .await;
    let public = classify(&lookup, ours, domain.primary.as_deref());
    let mut states: Vec<State> = dns_state(&public).into_iter().collect();
    let mut details = vec![public.describe(ours)];
    if let Some(plan) = &plan {
        let verdict = probe_gateway(network, checks, &NoReplicas, plan).await;
        states.extend(probe_state(verdict.reason));
        details.push(verdict.message);
    }
    if states.is_empty() {
        states.push(State::Ok);
    }
    let mx = match &lookup {
        MxLookup::Records(records) => records.iter().map(ToString::to_string).collect(),
        _ => vec![],
    };
    Finding {
        domain: domain.domain.clone(),
        states,
        mx,
        detail: details.join("; "),
    }
}

/// The findings as an aligned text table, with a count line.
pub fn table(findings: &[Finding]) -> String {
    let rows: Vec<[String; 3]> = findings
        .iter()
        .map(|f| {
            [
                f.domain.clone(),
                f.states
                    .iter()
                    .map(|s| s.name())
                    .collect::<Vec<_>>()
                    .join(","),
                if f.mx.is_empty() {
                    "-".into()
                } else {
                    f.mx.join(", ")
                },
            ]
        })
        .collect();
    let header = ["DOMAIN".to_string(), "STATE".into(), "MX".into()];
    let width = |column: usize| {
        rows.iter()
            .chain([&header])
            .map(|r| r[column].chars().count())
            .max()
            .unwrap_or(0)
    };
    let (w0, w1) = (width(0), width(1));
    let mut out = String::new();
    for row in [&header].into_iter().chain(&rows) {
        out.push_str(&format!(
            "{:w0$}  {:w1$}  {}\n",
            row[0],
            row[1],
            row[2],
            w0 = w0,
            w1 = w1
        ));
    }
    let wrong = findings.iter().filter(|f| !f.is_ok()).count();
    out.push_str(&format!(
        "\n{} domain(s), {} ok, {wrong} with problems\n",
        findings.len(),
        findings.len() - wrong
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_list_is_one_domain_per_line_with_comments() {
        let domains = parse(
            "# zones\nExample.COM.\n\n bücher.example # idn\n",
            InputFormat::List,
        )
        .unwrap();
        let names: Vec<_> = domains.iter().map(|d| d.domain.as_str()).collect();
        assert_eq!(names, ["example.com", "xn--bcher-kva.example"]);
    }

    #[test]
    fn csv_carries_primary_and_recipient() {
        let text = "domain,primary,recipient\na.test,mail.a.test,alice@a.test\nb.test,,*\nc.test\n";
        let domains = parse(text, InputFormat::Csv).unwrap();
        assert_eq!(
            domains[0],
            AuditDomain {
                domain: "a.test".into(),
                primary: Some("mail.a.test".into()),
                recipient: Some("alice@a.test".into()),
                catch_all: false,
            }
        );
        assert!(domains[1].catch_all && domains[1].primary.is_none());
        assert_eq!(domains[2].recipient, None);
    }

    #[test]
    fn bad_lines_name_their_number() {
        let error = parse("a.test\nb test\n", InputFormat::List).unwrap_err();
        assert!(error.to_string().starts_with("line 2:"), "{error}");
        let error = parse("a.test,mail.a.test,bob@other.test\n", InputFormat::Csv).unwrap_err();
        assert!(error.to_string().starts_with("line 1:"), "{error}");
        assert!(matches!(
            parse("# nothing\n", InputFormat::List),
            Err(AuditError::Empty)
        ));
    }

    #[test]
    fn yaml_reads_maildomains_and_skips_other_kinds() {
        let text = r#"
apiVersion: v1
kind: ConfigMap
metadata: {name: x}
---
apiVersion: mx-operator.io/v1alpha1
kind: MailDomain
metadata: {name: shop}
spec:
  domain: Shop.Example
  gatewayRef: {name: edge}
  primary: {host: mail.shop.example}
  recipients: {inline: [orders@shop.example]}
"#;
        let domains = parse(text, InputFormat::Yaml).unwrap();
        assert_eq!(
            domains,
            [AuditDomain {
                domain: "shop.example".into(),
                primary: Some("mail.shop.example".into()),
                recipient: Some("orders@shop.example".into()),
                catch_all: false,
            }]
        );
    }

    #[test]
    fn an_invalid_maildomain_is_refused_by_name() {
        let text = "apiVersion: mx-operator.io/v1alpha1\nkind: MailDomain\nmetadata: {name: bad}\nspec: {domain: 'a b', gatewayRef: {name: e}, primary: {host: m.test}, recipients: {catchAll: true}}\n";
        let error = parse(text, InputFormat::Yaml).unwrap_err();
        assert!(error.to_string().starts_with("MailDomain bad:"), "{error}");
    }

    #[test]
    fn the_format_follows_the_file_name() {
        assert_eq!(InputFormat::Auto.for_path("d.yaml"), InputFormat::Yaml);
        assert_eq!(InputFormat::Auto.for_path("d.csv"), InputFormat::Csv);
        assert_eq!(InputFormat::Auto.for_path("domains.txt"), InputFormat::List);
        assert_eq!(InputFormat::Csv.for_path("d.yaml"), InputFormat::Csv);
    }

    #[test]
    fn dns_states_map_to_findings() {
        use crate::dns::Mx;
        assert_eq!(dns_state(&MxState::Ours), None);
        assert_eq!(
            dns_state(&MxState::OurMxMissing(vec![Mx::new(10, "m.test")])),
            Some(State::MxMissing)
        );
        assert_eq!(dns_state(&MxState::NoMx), Some(State::MxMissing));
        assert_eq!(
            dns_state(&MxState::Elsewhere(vec![])),
            Some(State::Departed)
        );
        assert_eq!(dns_state(&MxState::NxDomain), Some(State::Nxdomain));
        assert_eq!(
            dns_state(&MxState::Unknown("x".into())),
            Some(State::DnsError)
        );
        assert_eq!(
            probe_state("NotAccepting"),
            Some(State::GatewayNotAccepting)
        );
        assert_eq!(probe_state("Verified"), None);
    }

    #[test]
    fn json_names_the_states_as_the_table_does() {
        let finding = Finding {
            domain: "a.test".into(),
            states: vec![State::Nxdomain, State::GatewayNotAccepting],
            mx: vec![],
            detail: String::new(),
        };
        let json = serde_json::to_value(&finding).unwrap();
        assert_eq!(
            json["states"],
            serde_json::json!(["nxdomain", "gateway-not-accepting"])
        );
    }

    #[test]
    fn the_table_is_aligned_and_counted() {
        let findings = [
            Finding {
                domain: "a.test".into(),
                states: vec![State::Ok],
                mx: vec!["20 mx1.relay.test".into()],
                detail: String::new(),
            },
            Finding {
                domain: "longer.test".into(),
                states: vec![State::Departed, State::GatewayNotAccepting],
                mx: vec![],
                detail: String::new(),
            },
        ];
        let text = table(&findings);
        assert_eq!(
            text,
            "DOMAIN       STATE                           MX\n\
             a.test       ok                              20 mx1.relay.test\n\
             longer.test  departed,gateway-not-accepting  -\n\
             \n2 domain(s), 1 ok, 1 with problems\n"
        );
    }
}
