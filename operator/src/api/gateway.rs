//! MailGateway: one fleet of Postfix relays with persistent queues.

use super::validate::{
    MAX_MX_HOSTNAMES, Problems, ValidationError, check_annotations, check_list_len,
    normalize_domain, normalize_mailbox, parse_byte_quantity, parse_client_network, parse_duration,
    parse_host_port, parse_next_hop, quantity_nanos, quote,
};
use super::{Condition, DeliveryLimits};
use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

/// A fleet of inbound mail relays (Postfix with a persistent queue, plus the mx-operator
/// agent) that relays mail for the MailDomains attached to it.
// Every printcolumn(...) repeats the keys name/type_/json_path, which clippy mistakes for
// duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Clone, Debug, Deserialize, Serialize, JsonSchema, PartialEq)]
#[kube(
    group = "mx-operator.io",
    version = "v1alpha1",
    kind = "MailGateway",
    namespaced,
    status = "MailGatewayStatus",
    shortname = "mgw",
    category = "mail",
    doc = "A fleet of inbound mail relays (Postfix with a persistent queue) that relays mail for the MailDomains attached to it.",
    printcolumn(name = "Replicas", type_ = "integer", json_path = ".spec.replicas"),
    printcolumn(name = "MX", type_ = "string", json_path = ".spec.mxHostnames[0]"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct MailGatewaySpec {
    /// Number of relay replicas. Each keeps its own queue on a persistent volume claim.
    /// A scale-in removes a replica only once its queue is empty: the replicas it removes
    /// take no new mail (not ready) and deliver their queues first, and go once they have
    /// retired for a minute, no SMTP session is open on them and two reads in a row found
    /// their queue empty. While one still holds mail (its primary down: mail older than
    /// `maxQueueLifetime` is bounced, and a bounce its sender does not take waits as long
    /// again) or cannot be asked, the StatefulSet keeps it and the `Scaled` condition says
    /// why.
    #[serde(default = "default_replicas")]
    // The API server stores any integer the schema allows; one outside the Rust type makes
    // the object undecodable, and every watch event of it costs the operator a backoff.
    #[schemars(range(min = i32::MIN, max = i32::MAX))]
    pub replicas: i32,
    /// Fully qualified host names this gateway answers for as an MX. The first one is the
    /// target of the MX records the operator publishes; all of them count as "ours" when
    /// the operator checks where a domain's public MX points.
    #[schemars(length(max = MAX_MX_HOSTNAMES))]
    pub mx_hostnames: Vec<String>,
    /// Container image with Postfix and the mx-operator agent. Unset: the gateway image of
    /// the running operator's version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// How the gateway is exposed to the Internet.
    #[serde(default)]
    pub service: GatewayService,
    /// The persistent mail queue of each replica.
    #[serde(default)]
    pub queue: QueueSpec,
    /// Delivery status notifications (DSNs) for mail the gateway accepted and then could
    /// not deliver: the primary refused it (5xx), or it was still queued after
    /// `queue.maxQueueLifetime`. Mail is only accepted for listed recipients, and a
    /// recipient refused during the SMTP dialogue gets its answer there, never a DSN.
    #[serde(default)]
    pub notifications: Notifications,
    /// TLS certificate offered to senders (STARTTLS). Unset: no STARTTLS is offered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<GatewayTls>,
    /// Delivery limits for domains that set none of their own.
    #[serde(default)]
    pub delivery: DeliveryLimits,
    /// Which namespaces may attach MailDomains to this gateway.
    #[serde(default)]
    pub allowed_domains: AllowedDomains,
    /// Where the gateway may deliver: the `primary` servers its MailDomains may name. Set,
    /// it holds for every MailDomain: an address primary must lie in one of `networks`, a
    /// host-name primary must end in one of `hostSuffixes` (a list left empty admits none
    /// of its kind). Unset, domains from the gateway's own namespace may name any primary,
    /// and domains from other namespaces none inside the cluster's own reach: loopback,
    /// link-local, unspecified and multicast addresses, `localhost`, single-label names,
    /// names under `.svc`, `.cluster.local` or `.local`, and names that resolve (through
    /// the operator's `--resolver`, at every reconcile) to such an address. The operator does not know the
    /// cluster's Pod and Service networks: on a gateway shared by tenants, list the
    /// networks their primaries live in. A primary refused here is
    /// `Ready=False PrimaryNotAllowed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_primaries: Option<AllowedPrimaries>,
    /// CPU and memory for the Postfix container. Unset: modest requests suited to a
    /// backup MX. `claims` are refused: the pods declare no resource claims to name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Where the operator's SMTP probe reaches the gateway, `host:port`. Unset: every
    /// ready replica, at its pod's address (no cluster DNS needed); a replica that
    /// answers wrongly is named in the MailDomain's `AcceptanceVerified` condition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe_address: Option<String>,
    /// Relay a domain only after its owner has proved control of its DNS: a TXT record
    /// `_mx-operator.<domain>` with the value the operator puts in the MailDomain's
    /// `status.ownership`. For gateways shared by tenants: a stale MX pointing at the
    /// gateway must not let a stranger claim the domain. A new claim not (yet) proved is
    /// not relayed and holds no claim on its name. Domains relayed before this was turned
    /// on stay relayed and show `OwnershipVerified: False` until their record is published.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub require_ownership_proof: bool,
}

impl MailGateway {
    /// The status condition of `type_`, if the operator has set it.
    pub fn condition(&self, type_: &str) -> Option<&Condition> {
        super::conditions::find(&self.status.as_ref()?.conditions, type_)
    }
}

fn default_replicas() -> i32 {
    2
}

/// The Service in front of the relays.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GatewayService {
    /// Service type: `LoadBalancer` (default), `NodePort` or `ClusterIP`.
    #[serde(default, rename = "type")]
    pub type_: ServiceType,
    /// `Local` (default) keeps the client's IP address visible to Postfix, which RBLs and
    /// client deny lists need; `Cluster` hides it.
    #[serde(default)]
    pub external_traffic_policy: TrafficPolicy,
    /// The load balancer address to request. It is also written to Postfix's
    /// `proxy_interfaces`, so the relay knows mail for an MX at that address is its own and
    /// does not loop.
    #[serde(
        default,
        rename = "loadBalancerIP",
        skip_serializing_if = "Option::is_none"
    )]
    pub load_balancer_ip: Option<String>,
    /// Annotations for the Service (cloud load balancer settings).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

impl Default for GatewayService {
    fn default() -> Self {
        Self {
            type_: ServiceType::LoadBalancer,
            external_traffic_policy: TrafficPolicy::Local,
            load_balancer_ip: None,
            annotations: BTreeMap::new(),
        }
    }
}

/// Kubernetes Service type: `LoadBalancer`, `NodePort` or `ClusterIP`.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
pub enum ServiceType {
    #[default]
    LoadBalancer,
    NodePort,
    ClusterIP,
}

/// `externalTrafficPolicy` of the Service: `Local` or `Cluster`.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
pub enum TrafficPolicy {
    #[default]
    Local,
    Cluster,
}

/// Persistent queue storage of each replica.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct QueueSpec {
    /// Size of each replica's queue volume, for example `10Gi`.
    #[serde(default = "default_queue_size")]
    pub size: String,
    /// StorageClass of the queue volumes. Unset: the cluster's default StorageClass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
    /// How long undeliverable mail stays queued before it is returned to the sender
    /// (Postfix `maximal_queue_lifetime`), for example `5d`. A backup MX needs this to
    /// outlast the primary's longest plausible outage.
    #[serde(default = "default_max_queue_lifetime")]
    pub max_queue_lifetime: String,
}

impl Default for QueueSpec {
    fn default() -> Self {
        Self {
            size: default_queue_size(),
            storage_class_name: None,
            max_queue_lifetime: default_max_queue_lifetime(),
        }
    }
}

fn default_queue_size() -> String {
    "10Gi".into()
}

fn default_max_queue_lifetime() -> String {
    "5d".into()
}

/// Where the gateway's notifications go, and which are sent.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Notifications {
    /// `Direct` (default): to the sender's mail servers, found by MX lookup (the gateway
    /// needs outbound port 25). `RelayHost`: through `relayHost`. `Off`: none are sent;
    /// each is discarded, with a line in the mail log. Only notifications leave this way:
    /// mail from any other sender to a domain the gateway does not relay is refused.
    #[serde(default)]
    pub mode: NotificationMode,
    /// With `mode: RelayHost`, the smarthost: `host`, `host:port`, `[host]` or
    /// `[host]:port` (brackets: no MX lookup of `host`), for example
    /// `[smtp.example.net]:25`. No authentication; STARTTLS when offered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relay_host: Option<String>,
    /// An address that gets a copy of every bounce notice (its headers, not the message)
    /// and the notices that could not be delivered to their sender. Unset: no copies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postmaster: Option<String>,
    /// Tell the sender when a message is still queued after this long, for example `4h`
    /// (at least `1h`; the message stays queued). Unset: no delay warnings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_warning_time: Option<String>,
}

/// How notifications leave the gateway: `Direct`, `RelayHost` or `Off`.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
pub enum NotificationMode {
    #[default]
    Direct,
    RelayHost,
    Off,
}

/// The certificate offered with STARTTLS.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GatewayTls {
    /// Name of a `kubernetes.io/tls` Secret in the gateway's namespace (for example one
    /// issued by cert-manager).
    pub secret_name: String,
}

/// Which namespaces may attach MailDomains.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AllowedDomains {
    /// `Same` (default): only the gateway's own namespace; `All`: every namespace;
    /// `Selector`: namespaces whose labels match `selector`.
    #[serde(default)]
    pub from: NamespacesFrom,
    /// Label selector for namespaces, used when `from` is `Selector`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
}

/// The primaries a gateway delivers to.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AllowedPrimaries {
    /// Addresses or CIDR networks, for example `203.0.113.0/24`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_ALLOWED_PRIMARIES))]
    pub networks: Vec<String>,
    /// DNS suffixes: `example.net` admits `example.net` and `mx.example.net`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_ALLOWED_PRIMARIES))]
    pub host_suffixes: Vec<String>,
}

/// Most entries of each list of `spec.allowedPrimaries`.
pub const MAX_ALLOWED_PRIMARIES: usize = 256;

/// Where attached MailDomains may live: `Same`, `All` or `Selector`.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
pub enum NamespacesFrom {
    #[default]
    Same,
    All,
    Selector,
}

/// Observed state of a MailGateway.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MailGatewayStatus {
    /// The `metadata.generation` the operator last acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready` and the conditions it summarises.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// Replicas whose Postfix and agent are ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_replicas: Option<i32>,
    /// How many MailDomains the gateway relays.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domains: Option<i32>,
    /// Where the gateway's delivery status notifications go, in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notifications: Option<String>,
    /// Domains it no longer relays (deleted, withdrawn or moved) that still have mail
    /// queued on its replicas, still delivered to their primaries; empty once delivered.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["domain"]))]
    pub draining: Vec<DrainingDomain>,
}

/// Mail a gateway still holds for a domain it no longer relays.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct DrainingDomain {
    /// The domain, normalized.
    pub domain: String,
    /// Messages queued for it, summed over the replicas.
    pub messages: u64,
}

const MAX_REPLICAS: i32 = 100;
const MIN_QUEUE_LIFETIME_SECONDS: u64 = 3_600;
/// Postfix's warning text counts the time in hours ("for 0 hours" below one).
const MIN_DELAY_WARNING_SECONDS: u64 = 3_600;

impl MailGatewaySpec {
    /// Every problem in the spec, with field paths.
    pub fn validate(&self) -> Result<(), ValidationError> {
        let mut problems = Problems::default();
        if !(1..=MAX_REPLICAS).contains(&self.replicas) {
            problems.push(
                "spec.replicas",
                format!(
                    "must be between 1 and {MAX_REPLICAS}, not {}",
                    self.replicas
                ),
            );
        }
        if self.mx_hostnames.is_empty() {
            problems.push("spec.mxHostnames", "must name at least one MX host name");
        }
        problems.check(
            "spec.mxHostnames",
            check_list_len(self.mx_hostnames.len(), MAX_MX_HOSTNAMES),
        );
        let mut seen = BTreeSet::new();
        for (i, host) in self.mx_hostnames.iter().enumerate() {
            let path = format!("spec.mxHostnames[{i}]");
            if let Some(host) = problems.check(path.clone(), normalize_domain(host))
                && !seen.insert(host.clone())
            {
                problems.push(path, format!("{host} is listed twice"));
            }
        }
        if let Some(image) = &self.image
            && (image.is_empty() || image.chars().any(|c| c.is_whitespace() || c.is_control()))
        {
            problems.push(
                "spec.image",
                format!("{} is not a container image reference", quote(image)),
            );
        }
        if let Some(ip) = &self.service.load_balancer_ip
            && ip.parse::<IpAddr>().is_err()
        {
            problems.push(
                "spec.service.loadBalancerIP",
                format!("{} is not an IP address", quote(ip)),
            );
        }
        problems.check(
            "spec.service.annotations",
            check_annotations(&self.service.annotations),
        );
        problems.check("spec.queue.size", parse_byte_quantity(&self.queue.size));
        if let Some(class) = &self.queue.storage_class_name {
            problems.k8s_name("spec.queue.storageClassName", class);
        }
        if let Some(lifetime) = problems.check(
            "spec.queue.maxQueueLifetime",
            parse_duration(&self.queue.max_queue_lifetime),
        ) && lifetime.as_secs() < MIN_QUEUE_LIFETIME_SECONDS
        {
            problems.push(
                "spec.queue.maxQueueLifetime",
                "must be at least 1h: a backup MX that returns mail sooner defeats its purpose",
            );
        }
        self.validate_notifications(&mut problems);
        if let Some(tls) = &self.tls {
            problems.k8s_name("spec.tls.secretName", &tls.secret_name);
        }
        self.delivery.validate_into("spec.delivery", &mut problems);
        if let Some(allowed) = &self.allowed_primaries {
            for (field, list) in [
                ("networks", &allowed.networks),
                ("hostSuffixes", &allowed.host_suffixes),
            ] {
                problems.check(
                    format!("spec.allowedPrimaries.{field}"),
                    check_list_len(list.len(), MAX_ALLOWED_PRIMARIES),
                );
            }
            for (i, network) in allowed.networks.iter().enumerate() {
                problems.check(
                    format!("spec.allowedPrimaries.networks[{i}]"),
                    parse_client_network(network),
                );
            }
            for (i, suffix) in allowed.host_suffixes.iter().enumerate() {
                problems.check(
                    format!("spec.allowedPrimaries.hostSuffixes[{i}]"),
                    normalize_domain(suffix),
                );
            }
        }
        match (self.allowed_domains.from, &self.allowed_domains.selector) {
            (NamespacesFrom::Selector, None) => problems.push(
                "spec.allowedDomains.selector",
                "is required when allowedDomains.from is Selector",
            ),
            (NamespacesFrom::Same | NamespacesFrom::All, Some(_)) => problems.push(
                "spec.allowedDomains.selector",
                "is only used when allowedDomains.from is Selector",
            ),
            _ => {}
        }
        if let Some(address) = &self.probe_address {
            problems.check("spec.probeAddress", parse_host_port(address));
        }
        for (field, quantities) in self.resources.iter().flat_map(|resources| {
            [
                ("requests", &resources.requests),
                ("limits", &resources.limits),
            ]
        }) {
            for (name, quantity) in quantities.iter().flatten() {
                problems.check(
                    format!("spec.resources.{field}.{name}"),
                    quantity_nanos(&quantity.0),
                );
            }
        }
        if self
            .resources
            .as_ref()
            .and_then(|resources| resources.claims.as_ref())
            .is_some_and(|claims| !claims.is_empty())
        {
            problems.push(
                "spec.resources.claims",
                "is not supported: the gateway's pods declare no resourceClaims for it to name; set requests and limits only",
            );
        }
        problems.finish()
    }
}

impl MailGatewaySpec {
    fn validate_notifications(&self, problems: &mut Problems) {
        let notifications = &self.notifications;
        let off = notifications.mode == NotificationMode::Off;
        match (notifications.mode, &notifications.relay_host) {
            (NotificationMode::RelayHost, None) => problems.push(
                "spec.notifications.relayHost",
                "is required when notifications.mode is RelayHost",
            ),
            (NotificationMode::RelayHost, Some(host)) => {
                problems.check("spec.notifications.relayHost", parse_next_hop(host));
            }
            (_, Some(_)) => problems.push(
                "spec.notifications.relayHost",
                "is only used when notifications.mode is RelayHost",
            ),
            (_, None) => {}
        }
        if let Some(address) = &notifications.postmaster {
            if off {
                problems.push(
                    "spec.notifications.postmaster",
                    "is not used when notifications.mode is Off: no notice leaves the gateway",
                );
            } else {
                problems.check("spec.notifications.postmaster", normalize_mailbox(address));
            }
        }
        if let Some(time) = &notifications.delay_warning_time {
            let path = "spec.notifications.delayWarningTime";
            if off {
                problems.push(path, "is not used when notifications.mode is Off");
            } else if let Some(warning) = problems.check(path, parse_duration(time))
                && let Ok(lifetime) = parse_duration(&self.queue.max_queue_lifetime)
                && !(warning.as_secs() >= MIN_DELAY_WARNING_SECONDS && warning < lifetime)
            {
                problems.push(
                    path,
                    format!(
                        "must be at least 1h (the warning counts in hours) and less than queue.maxQueueLifetime ({})",
                        self.queue.max_queue_lifetime
                    ),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid() -> MailGatewaySpec {
        serde_json::from_value(serde_json::json!({"mxHostnames": ["mx1.example.net"]})).unwrap()
    }

    fn problems_of(spec: &MailGatewaySpec) -> Vec<String> {
        match spec.validate() {
            Ok(()) => vec![],
            Err(e) => e.problems.into_iter().map(|p| p.path).collect(),
        }
    }

    #[test]
    fn allowed_primaries_are_networks_and_domain_suffixes() {
        let mut spec = valid();
        spec.allowed_primaries = Some(AllowedPrimaries {
            networks: vec!["203.0.113.0/24".into(), "2001:db8::/32".into()],
            host_suffixes: vec!["Example.NET.".into()],
        });
        assert_eq!(problems_of(&spec), Vec::<String>::new());
        spec.allowed_primaries = Some(AllowedPrimaries {
            networks: vec!["203.0.113.0/33".into(), "mail.example.net".into()],
            host_suffixes: vec!["not a domain".into()],
        });
        assert_eq!(
            problems_of(&spec),
            [
                "spec.allowedPrimaries.networks[0]",
                "spec.allowedPrimaries.networks[1]",
                "spec.allowedPrimaries.hostSuffixes[0]"
            ]
        );
    }

    #[test]
    fn defaults_are_valid() {
        let spec = valid();
        assert_eq!(spec.replicas, 2);
        assert_eq!(spec.service.type_, ServiceType::LoadBalancer);
        assert_eq!(spec.service.external_traffic_policy, TrafficPolicy::Local);
        assert_eq!(spec.queue.max_queue_lifetime, "5d");
        assert_eq!(spec.allowed_domains.from, NamespacesFrom::Same);
        assert_eq!(spec.validate(), Ok(()));
    }

    #[test]
    fn every_problem_is_reported_with_its_path() {
        let mut spec = valid();
        spec.replicas = 0;
        spec.mx_hostnames = vec![
            "mx1.example.net".into(),
            "MX1.example.net.".into(),
            "mx 2".into(),
        ];
        spec.image = Some("repo/image:tag\n".into());
        spec.service.load_balancer_ip = Some("203.0.113.300".into());
        spec.queue.size = "ten gigs".into();
        spec.queue.max_queue_lifetime = "30m".into();
        spec.tls = Some(GatewayTls {
            secret_name: "Bad_Name".into(),
        });
        spec.delivery.concurrency = Some(0);
        spec.delivery.rate_delay = Some("2h".into());
        spec.allowed_domains.from = NamespacesFrom::Selector;
        spec.resources = Some(
            serde_json::from_value(serde_json::json!({"claims": [{"name": "gpu"}],
                "requests": {"cpu": "0.5", "memory": "lots"}}))
            .unwrap(),
        );
        assert_eq!(
            problems_of(&spec),
            [
                "spec.replicas",
                "spec.mxHostnames[1]",
                "spec.mxHostnames[2]",
                "spec.image",
                "spec.service.loadBalancerIP",
                "spec.queue.size",
                "spec.queue.maxQueueLifetime",
                "spec.tls.secretName",
                "spec.delivery.concurrency",
                "spec.delivery.rateDelay",
                "spec.allowedDomains.selector",
                "spec.resources.requests.memory",
                "spec.resources.claims",
            ]
        );
    }

    #[test]
    fn notifications_name_a_relay_host_only_when_they_use_one() {
        let with = |value: serde_json::Value| {
            let mut spec = valid();
            spec.notifications = serde_json::from_value(value).unwrap();
            problems_of(&spec)
        };
        let none: Vec<String> = vec![];
        assert_eq!(with(serde_json::json!({})), none);
        assert_eq!(
            with(
                serde_json::json!({"mode": "RelayHost", "relayHost": "[smtp.example.net]:25",
                "postmaster": "Hostmaster@Example.NET", "delayWarningTime": "4h"})
            ),
            none
        );
        assert_eq!(
            with(serde_json::json!({"mode": "RelayHost"})),
            ["spec.notifications.relayHost"]
        );
        assert_eq!(
            with(serde_json::json!({"relayHost": "smtp.example.net"})),
            ["spec.notifications.relayHost"]
        );
        assert_eq!(
            with(
                serde_json::json!({"mode": "RelayHost", "relayHost": "2001:db8::1",
                "postmaster": "not an address", "delayWarningTime": "5d"})
            ),
            [
                "spec.notifications.relayHost",
                "spec.notifications.postmaster",
                "spec.notifications.delayWarningTime"
            ]
        );
        assert_eq!(
            with(
                serde_json::json!({"mode": "Off", "postmaster": "pm@example.net",
                "delayWarningTime": "4h"})
            ),
            [
                "spec.notifications.postmaster",
                "spec.notifications.delayWarningTime"
            ]
        );
    }

    #[test]
    fn no_hostnames_is_refused() {
        let mut spec = valid();
        spec.mx_hostnames.clear();
        assert_eq!(problems_of(&spec), ["spec.mxHostnames"]);
    }

    #[test]
    fn selector_without_selector_mode_is_refused() {
        let mut spec = valid();
        spec.allowed_domains.selector = Some(LabelSelector::default());
        assert_eq!(problems_of(&spec), ["spec.allowedDomains.selector"]);
        spec.allowed_domains.from = NamespacesFrom::Selector;
        assert_eq!(problems_of(&spec), Vec::<String>::new());
    }
}
