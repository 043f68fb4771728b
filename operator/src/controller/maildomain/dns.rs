//! A MailDomain's MX record, published through its DNSProvider. For RFC 2136 the
//! sequence is explicit: read the server's RRset and plan against what status lists as
//! ours, record the intent in status, send the update, confirm what is published.

use super::super::context::{Context, Error, FIELD_MANAGER};
use super::super::write::{apply_status, status_key};
use crate::api::MailDomain;
use crate::api::conditions::Verdict;
use crate::api::dnsprovider::{DNSProvider, Rfc2136};
use crate::api::domain::{DomainRole, MailDomainStatus};
use crate::api::validate::normalize_domain;
use crate::dns::external::{api_resource, endpoint};
use crate::dns::{Mx, plan};
use crate::net::UpdateSession;
use crate::net::rfc2136::{DnsError, Server};
use base64::Engine;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use std::sync::Arc;
use std::time::Duration;

const DNS_TIMEOUT: Duration = Duration::from_secs(5);

/// A problem a person can act on: the `DnsSynced` verdict.
#[derive(Debug)]
pub struct DnsProblem {
    pub verdict: Verdict,
    /// What status must list after this failure (None: what it listed before): what the
    /// stored status lists (the cache may lag behind this domain's last status write), and
    /// a record an update that may have reached the server added.
    pub still_listed: Option<Listed>,
}

impl DnsProblem {
    fn new(reason: &'static str, message: String) -> Self {
        Self {
            verdict: Verdict::failed(reason, message),
            still_listed: None,
        }
    }
}

impl From<DnsError> for DnsProblem {
    fn from(error: DnsError) -> Self {
        Self::new(error.reason(), error.to_string())
    }
}

/// The records a MailDomain's status lists as the operator's.
#[derive(Debug)]
pub struct Listed {
    pub published: Vec<String>,
    pub pending: Vec<String>,
}

/// What was published, for status.
pub struct Published {
    pub records: Vec<String>,
    /// Records an update may still add (see `MailDomainStatus::pending_records`).
    pub pending: Vec<String>,
    pub zone: Option<String>,
    pub via: String,
    /// The RFC 2136 server, whose answers the drift loop compares with our record.
    pub server: Option<std::net::SocketAddr>,
    /// Our record, published before, that was missing at the server and has been restored.
    pub repaired: Option<Mx>,
}

/// The records status lists as published, and as pending.
fn listed_before(status: Option<&MailDomainStatus>) -> (Vec<Mx>, Vec<Mx>) {
    let parse = |records: &[String]| records.iter().filter_map(|r| parse_record(r)).collect();
    status.map_or_else(Default::default, |s| {
        (parse(&s.published_records), parse(&s.pending_records))
    })
}

fn parse_record(text: &str) -> Option<Mx> {
    let (preference, exchange) = text.split_once(' ')?;
    Some(Mx::new(preference.parse().ok()?, exchange))
}

/// The DNSProvider the domain names, from the cache (`None`: it names none, or it does
/// not exist).
pub fn provider(domain: &MailDomain, ctx: &Context) -> Option<Arc<DNSProvider>> {
    let name = &domain.spec.dns.as_ref()?.provider_ref.name;
    let namespace = domain.namespace()?;
    ctx.providers.get(&ObjectRef::new(name).within(&namespace))
}

/// Makes the domain's MX record at its DNS provider match `desired` (None: withdraw ours).
pub async fn sync(
    domain: &MailDomain,
    ctx: &Context,
    provider: Option<&DNSProvider>,
    normalized: &str,
    desired: Option<&Mx>,
) -> Result<Result<Published, DnsProblem>, Error> {
    let Some(dns) = &domain.spec.dns else {
        return Ok(Ok(Published::nothing()));
    };
    let namespace = &domain
        .namespace()
        .ok_or_else(|| Error::NotNamespaced(domain.name_any()))?;
    let Some(provider) = provider else {
        return Ok(Err(DnsProblem::new(
            "ProviderNotFound",
            format!(
                "DNSProvider {namespace}/{} does not exist",
                dns.provider_ref.name
            ),
        )));
    };
    if let Err(problems) = provider.spec.validate() {
        return Ok(Err(DnsProblem::new(
            "InvalidProvider",
            format!(
                "DNSProvider {namespace}/{}: {problems}",
                dns.provider_ref.name
            ),
        )));
    }
    if let Some(rfc2136) = &provider.spec.rfc2136 {
        let api: Api<MailDomain> = Api::namespaced(ctx.client.clone(), namespace);
        let name = domain.name_any();
        // 1. Read the server's RRset and plan against the records status lists as ours.
        let mut update =
            match prepare_rfc2136(domain, ctx, namespace, normalized, rfc2136, desired).await {
                Ok(update) => update,
                Err(problem) => return Ok(Err(still_listed(problem, &api, &name, None).await?)),
            };
        if !update.changes.is_empty() {
            // The cache may not hold the last status write of this domain's previous
            // reconcile yet: plan against the stored status, or a record that reconcile
            // published would never be removed. (A GET of the object: the chart's RBAC
            // grants it, not a read of the status subresource.)
            let stored = api.get(&name).await?;
            update.replan(stored.status, desired);
        }
        // 2. Record the intent: a record about to be added is listed as ours first, so
        // a run that stops after sending still knows it is ours to remove.
        let intent = update.intent();
        if let Some(records) = &intent {
            record_intent(&api, &name, update.status.clone(), records.clone()).await?;
            ctx.written.forget(&status_key(domain));
        }
        // 3. Send, and 4. confirm what is published now.
        return match update.apply(normalized, domain.spec.mx.ttl, desired).await {
            Ok(published) => Ok(Ok(published)),
            Err(problem) => Ok(Err(still_listed(problem, &api, &name, intent).await?)),
        };
    }
    let labels = provider
        .spec
        .external_dns
        .as_ref()
        .map(|e| e.labels.clone())
        .unwrap_or_default();
    publish_endpoint(domain, ctx, namespace, normalized, desired, &labels)
        .await
        .map(Ok)
}

impl Published {
    /// Nothing published: the domain names no DNSProvider.
    fn nothing() -> Self {
        Self {
            records: vec![],
            pending: vec![],
            zone: None,
            via: String::new(),
            server: None,
            repaired: None,
        }
    }
}

/// An RFC 2136 change worked out against the server's current records, not yet sent.
struct PendingUpdate {
    session: Box<dyn UpdateSession>,
    server: std::net::SocketAddr,
    zone: String,
    current: Vec<Mx>,
    changes: crate::dns::Plan,
    /// The status the plan was made from, and the records it lists as published and pending.
    status: Option<MailDomainStatus>,
    before: Vec<Mx>,
    pending: Vec<Mx>,
}

impl PendingUpdate {
    fn replan(&mut self, status: Option<MailDomainStatus>, desired: Option<&Mx>) {
        (self.before, self.pending) = listed_before(status.as_ref());
        self.changes = plan(&self.current, &self.ours(), desired);
        self.status = status;
    }

    /// Every record status lists as the operator's: those the plan may remove.
    fn ours(&self) -> Vec<Mx> {
        self.before.iter().chain(&self.pending).cloned().collect()
    }

    fn intent(&self) -> Option<Vec<String>> {
        crate::dns::plan::intent(&self.ours(), &self.changes)
            .map(|records| records.iter().map(Mx::to_string).collect())
    }

    async fn apply(
        mut self,
        normalized: &str,
        ttl: u32,
        desired: Option<&Mx>,
    ) -> Result<Published, DnsProblem> {
        let repaired = self
            .changes
            .add
            .clone()
            .filter(|add| self.before.contains(add));
        if !self.changes.is_empty() {
            self.session
                .apply(&self.zone, normalized, ttl, &self.changes)
                .await?;
            tracing::info!(domain = normalized, zone = self.zone, add = ?self.changes.add, remove = ?self.changes.remove, "MX records updated");
        }
        let (published, pending) =
            crate::dns::plan::after_update(&self.current, &self.before, &self.pending, desired);
        Ok(Published {
            records: published.iter().map(Mx::to_string).collect(),
            pending: pending.iter().map(Mx::to_string).collect(),
            zone: Some(self.zone),
            via: format!("RFC 2136 server {}", self.server),
            server: Some(self.server),
            repaired,
        })
    }
}

async fn prepare_rfc2136(
    domain: &MailDomain,
    ctx: &Context,
    namespace: &str,
    normalized: &str,
    spec: &Rfc2136,
    desired: Option<&Mx>,
) -> Result<PendingUpdate, DnsProblem> {
    let server = server(ctx, namespace, spec).await?;
    let mut session = ctx.network.updater.connect(&server).await?;
    let zone = match &spec.zone {
        Some(zone) => normalize_domain(zone).unwrap_or_else(|_| zone.clone()),
        None => session.find_zone(normalized).await?,
    };
    let current = session.mx_records(normalized).await?;
    let mut update = PendingUpdate {
        session,
        server: server.address,
        zone,
        current,
        changes: crate::dns::Plan::default(),
        status: None,
        before: vec![],
        pending: vec![],
    };
    update.replan(domain.status.clone(), desired);
    Ok(update)
}

/// `problem`, with the records status must keep listing: the stored status' (re-read, as
/// the cache may lag behind) and `intent`'s.
async fn still_listed(
    problem: DnsProblem,
    api: &Api<MailDomain>,
    name: &str,
    intent: Option<Vec<String>>,
) -> Result<DnsProblem, Error> {
    let stored = api.get(name).await?.status.unwrap_or_default();
    let mut published = stored.published_records;
    for record in intent.into_iter().flatten() {
        if !published.contains(&record) {
            published.push(record);
        }
    }
    Ok(DnsProblem {
        still_listed: Some(Listed {
            published,
            pending: stored.pending_records,
        }),
        ..problem
    })
}

/// Lists `records` as published in `status` before they are sent. Written like every
/// status write (server-side apply of the whole status by the operator's field manager), so
/// the reconcile's own status write replaces the list afterwards, with an empty one too.
async fn record_intent(
    api: &Api<MailDomain>,
    name: &str,
    status: Option<MailDomainStatus>,
    records: Vec<String>,
) -> Result<(), Error> {
    let mut status = status.unwrap_or_default();
    status.published_records = records;
    apply_status(api, name, &status).await
}

/// The RFC 2136 server of a provider in `namespace`, with its TSIG key read from its Secret.
pub(crate) async fn server(
    ctx: &Context,
    namespace: &str,
    spec: &Rfc2136,
) -> Result<Server, DnsProblem> {
    let secret_ref = &spec.tsig.secret_ref;
    let missing = |what: &str| {
        DnsProblem::new(
            "KeyNotFound",
            format!(
                "TSIG key: {what} (Secret {namespace}/{} key {:?})",
                secret_ref.name, secret_ref.key
            ),
        )
    };
    let secret = Api::<Secret>::namespaced(ctx.client.clone(), namespace)
        .get_opt(&secret_ref.name)
        .await
        .map_err(|e| DnsProblem::new("KeyNotFound", e.to_string()))?
        .ok_or_else(|| missing("the Secret does not exist"))?;
    let encoded = secret
        .data
        .as_ref()
        .and_then(|d| d.get(&secret_ref.key))
        .ok_or_else(|| missing("the Secret has no such key"))?;
    let text = String::from_utf8_lossy(&encoded.0);
    let secret_bytes = base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .map_err(|_| {
            missing("the key is not base64 (write it as in the name server's key file)")
        })?;
    let address = tokio::net::lookup_host((spec.server.as_str(), spec.port))
        .await
        .ok()
        .and_then(|mut addresses| addresses.next())
        .ok_or_else(|| {
            DnsProblem::new(
                "ServerUnreachable",
                format!("cannot resolve the DNS server {:?}", spec.server),
            )
        })?;
    Ok(Server {
        address,
        key_name: spec.tsig.key_name.clone(),
        algorithm: spec.tsig.algorithm,
        secret: secret_bytes,
        timeout: DNS_TIMEOUT,
    })
}

async fn publish_endpoint(
    domain: &MailDomain,
    ctx: &Context,
    namespace: &str,
    normalized: &str,
    desired: Option<&Mx>,
    labels: &std::collections::BTreeMap<String, String>,
) -> Result<Published, Error> {
    let api: Api<DynamicObject> =
        Api::namespaced_with(ctx.client.clone(), namespace, &api_resource());
    let name = format!("mx-{normalized}");
    let Some(ours) = desired else {
        if api.get_opt(&name).await?.is_some() {
            api.delete(&name, &Default::default()).await?;
        }
        return Ok(Published {
            records: vec![],
            pending: vec![],
            zone: None,
            via: format!("DNSEndpoint {namespace}/{name}"),
            server: None,
            repaired: None,
        });
    };
    let mut records = vec![];
    if domain.spec.role == DomainRole::Backup {
        // external-dns replaces the whole RRset: the customer's primary must be listed too.
        records.push(Mx::new(10, &domain.spec.primary.host));
    }
    records.push(ours.clone());
    let mut object = endpoint(
        &name,
        namespace,
        normalized,
        domain.spec.mx.ttl,
        &records,
        labels,
    );
    object.metadata.owner_references = domain.controller_owner_ref(&()).map(|r| vec![r]);
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let live = api.get_opt(&name).await?;
    let unchanged = live.as_ref().is_some_and(|l| {
        l.data.get("spec") == object.data.get("spec")
            && l.metadata.owner_references == object.metadata.owner_references
    });
    if !unchanged {
        api.patch(&name, &params, &Patch::Apply(&object)).await?;
    }
    Ok(Published {
        records: records.iter().map(Mx::to_string).collect(),
        pending: vec![],
        zone: None,
        via: format!("DNSEndpoint {namespace}/{}", object.name_any()),
        server: None,
        repaired: None,
    })
}
