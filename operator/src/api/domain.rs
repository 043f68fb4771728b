//! MailDomain: one domain the gateway fleet relays for.

use super::validate::{
    MAX_DENY_ENTRIES, MAX_INLINE_RECIPIENTS, MAX_RBLS, Problems, ValidationError, check_list_len,
    is_dns1123_label, normalize_address, normalize_domain, normalize_host,
    normalize_sender_pattern, parse_client_network, parse_duration, parse_message_size, quote,
};
use super::{Condition, DeliveryLimits, KeyRef};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// One mail domain relayed by a MailGateway: which recipients exist, where accepted mail
/// goes, which MX record is published for it, and what happens when the domain leaves.
// Every printcolumn(...) repeats the keys name/type_/json_path, which clippy mistakes for
// duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Clone, Debug, Deserialize, Serialize, PartialEq)]
#[kube(
    group = "mx-operator.io",
    version = "v1alpha1",
    kind = "MailDomain",
    namespaced,
    status = "MailDomainStatus",
    shortname = "md",
    category = "mail",
    doc = "One mail domain relayed by a MailGateway: its recipients, where accepted mail goes, its MX record, and what happens when it leaves.",
    printcolumn(name = "Domain", type_ = "string", json_path = ".spec.domain"),
    printcolumn(
        name = "Gateway",
        type_ = "string",
        json_path = ".spec.gatewayRef.name"
    ),
    printcolumn(name = "Role", type_ = "string", json_path = ".spec.role"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(name = "Drift", type_ = "string", json_path = ".status.drift"),
    printcolumn(
        name = "Queued",
        type_ = "string",
        json_path = ".status.queue.messages"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct MailDomainSpec {
    /// The mail domain, for example `example.com`. Internationalised names are accepted and
    /// used in punycode form; case and a trailing dot do not matter. Subdomains are not
    /// included: each needs its own MailDomain.
    #[x_kube(validation = Rule::new(r"self.matches('^[^\\s,#@]+$')").message("domain must not contain whitespace, ',', '#' or '@'"))]
    // A bound for the CEL rule's cost estimate (and 253 characters plus a trailing dot).
    #[schemars(length(max = 254))]
    pub domain: String,
    /// The MailGateway that relays this domain.
    pub gateway_ref: GatewayRef,
    /// `Backup` (default): the gateway is a lower-priority MX that queues mail while the
    /// customer's own MX is unreachable. `Primary`: the gateway is the domain's inbound MX.
    #[serde(default)]
    pub role: DomainRole,
    /// The server accepted mail is relayed to: the customer's own mail server. One that is
    /// the gateway itself (one of its `mxHostnames` or Service addresses on port 25, or its
    /// `probeAddress`) is refused with `Ready=False PrimaryIsGateway`: mail would loop.
    pub primary: PrimaryServer,
    /// The MX record published for this domain.
    #[serde(default)]
    pub mx: MxRecord,
    /// How the MX record is published. Unset: the domain's DNS is managed elsewhere, and
    /// the operator only observes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<DnsPublishing>,
    /// The addresses that exist in the domain. Mail to any other address is refused during
    /// the SMTP dialogue (550 5.1.1), so the gateway never accepts mail it would later bounce.
    pub recipients: Recipients,
    /// Acceptance policy. Make it the same as the primary's: a laxer backup MX is where spam
    /// and backscatter come in.
    #[serde(default)]
    pub policy: MailPolicy,
    /// Delivery limits towards the primary. Unset: the gateway's defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery: Option<DeliveryLimits>,
    /// What happens when the domain's public MX no longer points at this gateway.
    #[serde(default)]
    pub departure: Departure,
}

/// Reference to a MailGateway.
#[derive(JsonSchema, Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GatewayRef {
    /// Name of the MailGateway.
    pub name: String,
    /// Namespace of the MailGateway. Unset: the MailDomain's own namespace. The gateway must
    /// allow MailDomains from this namespace (`spec.allowedDomains`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// Role of the gateway for the domain: `Backup` or `Primary`.
#[derive(JsonSchema, Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
pub enum DomainRole {
    #[default]
    Backup,
    Primary,
}

/// The customer's mail server that accepted mail is relayed to.
#[derive(JsonSchema, Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PrimaryServer {
    /// Host name or IP address of the server. It is used as given (no MX lookup), so mail
    /// cannot loop back to the gateway through the domain's own MX records.
    pub host: String,
    /// SMTP port of the server.
    #[serde(default = "default_smtp_port")]
    pub port: u16,
    /// TLS towards the server: `None`, `May` (default: opportunistic), `Encrypt` (TLS
    /// required), `Verify` or `Secure` (TLS required and the certificate checked). Mail
    /// queued on a relay is readable by its operators; encrypt the hop when you can.
    #[serde(default)]
    pub tls: TlsPolicy,
}

fn default_smtp_port() -> u16 {
    25
}

/// TLS towards the primary, as Postfix's `smtp_tls_security_level`.
#[derive(JsonSchema, Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
pub enum TlsPolicy {
    None,
    #[default]
    May,
    Encrypt,
    Verify,
    Secure,
}

/// The MX record published for the domain.
#[derive(JsonSchema, Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MxRecord {
    /// MX preference of the gateway's record. Unset: 10 for role `Primary`, 20 for `Backup`
    /// (a backup must have a higher number than the customer's own MX).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preference: Option<u16>,
    /// TTL of the record in seconds (60–604800).
    #[serde(default = "default_ttl")]
    // The API server stores any integer the schema allows; one outside the Rust type makes
    // the object undecodable, and every watch event of it costs the operator a backoff.
    #[schemars(range(max = u32::MAX))]
    pub ttl: u32,
}

impl Default for MxRecord {
    fn default() -> Self {
        Self {
            preference: None,
            ttl: default_ttl(),
        }
    }
}

fn default_ttl() -> u32 {
    3_600
}

/// Where the MX record is published.
#[derive(JsonSchema, Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DnsPublishing {
    /// The DNSProvider (in the MailDomain's namespace) that publishes the record.
    pub provider_ref: LocalRef,
}

/// Reference to an object in the same namespace.
#[derive(JsonSchema, Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LocalRef {
    /// Name of the object.
    pub name: String,
}

/// The recipients that exist in the domain. The sources are merged.
#[derive(JsonSchema, Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Recipients {
    /// Exact addresses, for example `alice@example.com`; at most 10,000 (longer lists
    /// belong in a ConfigMap or Secret).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_INLINE_RECIPIENTS))]
    pub inline: Vec<String>,
    /// A ConfigMap key holding one address per line (`#` starts a comment). Changes to it
    /// reach the gateway without touching the MailDomain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map_ref: Option<KeyRef>,
    /// A Secret key in the same format, for address lists that must not be world-readable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<KeyRef>,
    /// The primary's directory (LDAP, LDAPS or StartTLS), searched every `refreshInterval`
    /// for the domain's addresses. The list in force is the last search that succeeded;
    /// `maxAge` counts from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ldap: Option<LdapSource>,
    /// A list the primary serves over HTTP(S), fetched every `refreshInterval` with
    /// `If-None-Match`, so an unchanged list costs one request and no body. The list in
    /// force is the last fetch that succeeded; `maxAge` counts from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpSource>,
    /// Accept mail for every address of the domain. Off by default: a catch-all backup MX
    /// accepts spam for non-existent users and bounces it later to forged senders
    /// (backscatter). Turn it on only if the primary accepts every address too.
    #[serde(default)]
    pub catch_all: bool,
    /// How old a referenced list may become before the gateway answers 4xx (try later) for
    /// the domain instead of trusting stale data, for example `24h`. Unset: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age: Option<String>,
    /// How far a synced source's list (`ldap`, `http`) may shrink in one sync before it is
    /// held instead of applied: a truncated export, an empty answer or a directory ACL that
    /// hides entries would otherwise make the gateway refuse real users with 550. A held
    /// list is applied when the MailDomain is annotated
    /// `mx-operator.io/accept-recipient-shrink: <id>` (the id status shows), or when the
    /// limit is raised above it. An empty list is always held.
    #[serde(default)]
    pub max_shrink: MaxShrink,
}

/// A shrink is held when it removes more than `percent` of the list in force *and* at
/// least `addresses` addresses.
#[derive(JsonSchema, Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct MaxShrink {
    /// Percent of the list in force a sync may remove and still be applied (whatever the
    /// count).
    #[serde(default = "default_shrink_percent")]
    #[schemars(range(max = 100))]
    pub percent: u32,
    /// A sync is held only when it removes at least this many addresses (and more than
    /// `percent`).
    #[serde(default = "default_shrink_addresses")]
    pub addresses: u32,
}

impl Default for MaxShrink {
    fn default() -> Self {
        Self {
            percent: default_shrink_percent(),
            addresses: default_shrink_addresses(),
        }
    }
}

fn default_shrink_percent() -> u32 {
    10
}

fn default_shrink_addresses() -> u32 {
    100
}

impl MaxShrink {
    /// Whether a list of `to` addresses that replaces one of `from` is held.
    pub fn holds(&self, from: usize, to: usize) -> bool {
        if to == 0 {
            return from > 0;
        }
        let removed = from.saturating_sub(to);
        removed as u128 * 100 > self.percent as u128 * from as u128
            && removed >= self.addresses as usize
    }
}

/// A directory that holds the domain's addresses.
#[derive(JsonSchema, Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LdapSource {
    /// `ldap://host:port` or `ldaps://host:port`.
    pub url: String,
    /// Upgrade an `ldap://` connection with StartTLS before binding.
    #[serde(default, rename = "startTLS")]
    pub start_tls: bool,
    /// A Secret key (same namespace) holding the PEM certificates of the CAs the server's
    /// certificate is checked against. Unset: the system's CAs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_secret_ref: Option<KeyRef>,
    /// The DN to bind as, for example `cn=mx-backup,ou=services,dc=example,dc=com`.
    #[serde(rename = "bindDN")]
    pub bind_dn: String,
    /// A Secret key (same namespace) holding the bind password.
    pub password_secret_ref: KeyRef,
    /// Where the search starts (subtree), for example `ou=people,dc=example,dc=com`.
    #[serde(rename = "baseDN")]
    pub base_dn: String,
    /// Which entries hold addresses.
    #[serde(default = "default_ldap_filter")]
    pub filter: String,
    /// The attributes whose values are addresses. Values of `proxyAddresses` style carry a
    /// type: `smtp:` and `SMTP:` are addresses, other types (`X500:`, `SIP:`) are skipped.
    /// Addresses of other domains are skipped.
    #[serde(default = "default_ldap_attributes")]
    #[schemars(length(min = 1, max = 16))]
    pub attributes: Vec<String>,
    /// Entries asked for per page of a paged search.
    #[serde(default = "default_ldap_page_size")]
    #[schemars(range(min = 1, max = 10000))]
    pub page_size: u32,
    /// How often the directory is searched again, for example `15m`.
    #[serde(default = "default_refresh")]
    pub refresh_interval: String,
    /// Skip values that are not valid addresses (reported by the entry's position in the
    /// search result and the attribute, never by value or DN) instead of keeping the last
    /// good list in force.
    #[serde(default)]
    pub skip_invalid: bool,
    /// Send the bind password over `ldap://` without `startTLS`, where anyone on the path
    /// can read it. Without it such a source is refused (`InsecureCredentials`).
    #[serde(default)]
    pub insecure: bool,
}

fn default_ldap_filter() -> String {
    "(mail=*)".into()
}

fn default_ldap_attributes() -> Vec<String> {
    vec!["mail".into()]
}

fn default_ldap_page_size() -> u32 {
    500
}

fn default_refresh() -> String {
    "15m".into()
}

/// A list served over HTTP(S).
#[derive(JsonSchema, Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HttpSource {
    /// `https://...` (or `http://...`).
    pub url: String,
    /// A Secret key (same namespace) holding the PEM certificates of the CAs the server's
    /// certificate is checked against. Unset: the system's CAs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_secret_ref: Option<KeyRef>,
    /// A Secret key holding a token sent as `Authorization: Bearer <token>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bearer_token_secret_ref: Option<KeyRef>,
    /// A Secret with the keys `username` and `password` (the `kubernetes.io/basic-auth`
    /// type), sent as HTTP basic authentication.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub basic_auth_secret_ref: Option<LocalRef>,
    /// `Lines`: one address per line, `#` comments. `JSONLines`: one JSON string, or object
    /// with an `address` field, per line.
    #[serde(default)]
    pub format: ListFormat,
    /// How often the list is fetched again, for example `15m`.
    #[serde(default = "default_refresh")]
    pub refresh_interval: String,
    /// Skip lines that are not valid addresses (reported by line number, never by
    /// content) instead of keeping the last good list in force.
    #[serde(default)]
    pub skip_invalid: bool,
    /// Send a token or basic authentication over `http://`, where anyone on the path can
    /// read it. Without it such a source is refused (`InsecureCredentials`).
    #[serde(default)]
    pub insecure: bool,
}

#[derive(JsonSchema, Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
pub enum ListFormat {
    #[default]
    Lines,
    #[serde(rename = "JSONLines")]
    JsonLines,
}

/// Sources are not asked more often than this: a busy directory is the primary's.
const MIN_REFRESH: std::time::Duration = std::time::Duration::from_secs(10);

/// How often a source is synced; the default where `refreshInterval` does not parse
/// (validation reports it).
pub fn refresh_every(interval: &str) -> std::time::Duration {
    parse_duration(interval)
        .unwrap_or(std::time::Duration::from_secs(900))
        .max(MIN_REFRESH)
}

fn validate_refresh(path: &str, interval: &str, problems: &mut Problems) {
    match parse_duration(interval) {
        Ok(refresh) if refresh < MIN_REFRESH => problems.push(
            format!("{path}.refreshInterval"),
            format!("must be at least {} s", MIN_REFRESH.as_secs()),
        ),
        Ok(_) => {}
        Err(message) => problems.push(format!("{path}.refreshInterval"), message),
    }
}

fn validate_key_refs(path: &str, refs: &[(&str, Option<&KeyRef>)], problems: &mut Problems) {
    for (field, reference) in refs {
        if let Some(reference) = reference {
            problems.k8s_name(format!("{path}.{field}.name"), &reference.name);
            problems.k8s_key(format!("{path}.{field}.key"), &reference.key);
        }
    }
}

impl HttpSource {
    fn validate_into(&self, path: &str, problems: &mut Problems) {
        let authority = ["http://", "https://"]
            .iter()
            .find_map(|scheme| self.url.strip_prefix(scheme))
            .and_then(|rest| rest.split(['/', '?']).next());
        if authority.is_none_or(|a| a.is_empty() || a.contains(['@', ' ', '#'])) {
            problems.push(
                format!("{path}.url"),
                format!(
                    "{:?} is not an HTTP URL: https://host[:port]/path (credentials go in a Secret)",
                    self.url
                ),
            );
        }
        if self.bearer_token_secret_ref.is_some() && self.basic_auth_secret_ref.is_some() {
            problems.push(
                format!("{path}.basicAuthSecretRef"),
                "name one of bearerTokenSecretRef and basicAuthSecretRef",
            );
        }
        if let Some(basic) = &self.basic_auth_secret_ref {
            problems.k8s_name(format!("{path}.basicAuthSecretRef.name"), &basic.name);
        }
        validate_key_refs(
            path,
            &[
                ("caSecretRef", self.ca_secret_ref.as_ref()),
                (
                    "bearerTokenSecretRef",
                    self.bearer_token_secret_ref.as_ref(),
                ),
            ],
            problems,
        );
        validate_refresh(path, &self.refresh_interval, problems);
    }
}

impl Recipients {
    /// Whether the operator syncs a source of these recipients itself (ldap, http).
    pub fn has_synced_sources(&self) -> bool {
        self.ldap.is_some() || self.http.is_some()
    }

    /// Every Secret the recipients are read with: the list's, and the synced sources'
    /// credentials and CAs.
    pub fn secret_names(&self) -> impl Iterator<Item = &str> {
        let list = self.secret_ref.iter().map(|r| r.name.as_str());
        let ldap = self.ldap.iter().flat_map(LdapSource::secret_names);
        let http = self.http.iter().flat_map(HttpSource::secret_names);
        list.chain(ldap).chain(http)
    }
}

impl HttpSource {
    /// The Secrets the list is fetched with (CA, token, basic authentication).
    pub fn secret_names(&self) -> impl Iterator<Item = &str> {
        let keys = [&self.ca_secret_ref, &self.bearer_token_secret_ref];
        let keys = keys.into_iter().flatten().map(|r| r.name.as_str());
        keys.chain(self.basic_auth_secret_ref.iter().map(|r| r.name.as_str()))
    }
}

impl LdapSource {
    /// The Secrets the directory is searched with (password, CA).
    pub fn secret_names(&self) -> impl Iterator<Item = &str> {
        let ca = self.ca_secret_ref.iter().map(|r| r.name.as_str());
        std::iter::once(self.password_secret_ref.name.as_str()).chain(ca)
    }
}

impl LdapSource {
    fn validate_into(&self, path: &str, problems: &mut Problems) {
        let authority = ["ldap://", "ldaps://"]
            .iter()
            .find_map(|scheme| self.url.strip_prefix(scheme))
            .map(|rest| rest.strip_suffix('/').unwrap_or(rest));
        match authority {
            Some(authority)
                if !authority.is_empty() && !authority.contains(['/', '?', '#', '@', ' ']) => {}
            _ => problems.push(
                format!("{path}.url"),
                format!(
                    "{:?} is not an LDAP server URL: ldap://host[:port] or ldaps://host[:port]",
                    self.url
                ),
            ),
        }
        if self.start_tls && self.url.starts_with("ldaps://") {
            problems.push(
                format!("{path}.startTLS"),
                "an ldaps:// connection is TLS already: use ldap:// with startTLS",
            );
        }
        for (field, dn) in [("bindDN", &self.bind_dn), ("baseDN", &self.base_dn)] {
            if dn.trim().is_empty() || dn.contains(['\n', '\r']) {
                problems.push(format!("{path}.{field}"), "must be a DN on one line");
            }
        }
        let filter = self.filter.trim();
        if !(filter.starts_with('(') && filter.ends_with(')')) {
            problems.push(
                format!("{path}.filter"),
                format!("{:?} is not an LDAP filter: it is one parenthesised expression, for example (mail=*)", self.filter),
            );
        }
        for (i, attribute) in self.attributes.iter().enumerate() {
            let mut chars = attribute.chars();
            let valid = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
                && chars.all(|c| c.is_ascii_alphanumeric() || c == '-');
            if !valid {
                problems.push(
                    format!("{path}.attributes[{i}]"),
                    format!("{attribute:?} is not an attribute name"),
                );
            }
        }
        validate_refresh(path, &self.refresh_interval, problems);
        validate_key_refs(
            path,
            &[
                ("passwordSecretRef", Some(&self.password_secret_ref)),
                ("caSecretRef", self.ca_secret_ref.as_ref()),
            ],
            problems,
        );
    }
}

/// The acceptance policy of the domain.
#[derive(JsonSchema, Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MailPolicy {
    /// Largest message accepted, for example `25Mi`. Unset: the gateway's default (10 MB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_message_size: Option<String>,
    /// DNS block lists checked for the connecting client, for example `zen.spamhaus.org`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_RBLS))]
    pub rbls: Vec<String>,
    /// Senders refused: full addresses or whole domains (`example.org` or `@example.org`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_DENY_ENTRIES))]
    pub sender_deny: Vec<String>,
    /// Clients refused: IP addresses or CIDR networks.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_DENY_ENTRIES))]
    pub client_deny: Vec<String>,
    /// Refuse mail for the domain from clients that did not start TLS.
    #[serde(default)]
    pub require_tls: bool,
}

/// What happens when the domain's public MX no longer points at the gateway.
#[derive(JsonSchema, Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Departure {
    /// How long the MX must point elsewhere (or the domain be missing) before the action
    /// runs, for example `72h`.
    #[serde(default = "default_grace_period")]
    pub grace_period: String,
    /// `Remove` (default): stop relaying and withdraw the gateway's MX record, keeping the
    /// object with `Departed=True`. `Suspend`: answer 4xx for the domain. `Report`: only
    /// set the condition and emit an Event.
    #[serde(default)]
    pub action: DepartureAction,
}

impl Default for Departure {
    fn default() -> Self {
        Self {
            grace_period: default_grace_period(),
            action: DepartureAction::default(),
        }
    }
}

fn default_grace_period() -> String {
    "72h".into()
}

/// The departure action: `Remove`, `Suspend` or `Report`.
#[derive(JsonSchema, Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
pub enum DepartureAction {
    #[default]
    Remove,
    Suspend,
    Report,
}

/// Observed state of a MailDomain.
#[derive(JsonSchema, Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MailDomainStatus {
    /// The `metadata.generation` the operator last acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready` and the conditions it summarises.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// How many exact addresses the gateway accepts for the domain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recipient_count: Option<i64>,
    /// Fingerprint of the accepted recipient list (changes whenever the list does).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recipients_hash: Option<String>,
    /// The MailRelay (`namespace/name`) that carries this domain to its gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relay: Option<String>,
    /// Deprecated: the relay ConfigMap (`namespace/name`) an operator before MailRelays
    /// wrote. It counts as this domain's relay for its claim, and the ConfigMap is removed
    /// (and this cleared) once every replica of the gateway runs an agent that reads
    /// MailRelays.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relay_config_map: Option<String>,
    /// The MX records the operator published for the domain (`preference host`); only
    /// these are ever changed or removed by it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub published_records: Vec<String>,
    /// Records of the operator's that were not at the server when it last looked, though an
    /// update that may still be applied had sent them (an operator stopped, or timed out,
    /// before it saw the answer): removed when they appear.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pending_records: Vec<String>,
    /// The DNS zone the records were published in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns_zone: Option<String>,
    /// What the drift checks found off, worst first (`None` when DNS, the gateway and the
    /// primary agree with the spec); unset until the first check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drift: Option<String>,
    /// The DNS record that proves control of the domain, when its gateway requires one
    /// (`spec.requireOwnershipProof`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ownership: Option<OwnershipProof>,
    /// Mail for the domain still queued on gateways that no longer relay it (it was
    /// withdrawn there, or moved away), still delivered to the primary; empty once
    /// delivered.
    #[serde(default)]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["gateway"]))]
    pub draining: Vec<DrainingAt>,
    /// Mail for the domain queued at its gateway, summed over the replicas; absent while
    /// none is queued. Rewritten only when a figure moves on by a step (see its fields), so
    /// a steady queue costs no writes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<QueuedMail>,
    /// The recipient sources the operator syncs itself (`spec.recipients.ldap`, `http`):
    /// what the last sync found, and why the last attempt failed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["source"]))]
    pub recipient_sources: Vec<RecipientSourceStatus>,
}

/// One synced recipient source.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RecipientSourceStatus {
    /// `ldap` or `http`.
    pub source: String,
    /// Addresses of the domain in the list in force (the last successful sync).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub addresses: Option<i64>,
    /// When the list in force was read; `maxAge` counts from here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_success: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
    /// Why the last attempt failed: `AuthFailed`, `Unreachable`, `TLSFailed`,
    /// `SearchFailed` (LDAP), `ServerError` (HTTP), `NotUTF8` (HTTP: a UTF-16 list),
    /// `InvalidEntries`, `TooLarge`, `CredentialsMissing`; absent when it succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// What failed, or what a successful sync skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// A list that synced but shrank past `recipients.maxShrink`: not applied, the list in
    /// force keeps serving.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held: Option<HeldSync>,
}

/// A synced list held back because it shrank too far.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HeldSync {
    /// What `mx-operator.io/accept-recipient-shrink` names to apply it.
    pub id: String,
    /// Addresses it holds.
    pub addresses: i64,
    /// When it was read.
    pub at: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time,
}

/// Mail a gateway's replicas hold for a domain, as their agents last read the queue.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct QueuedMail {
    /// How many messages wait, as a range: `1-9`, `10-99`, `100-999`, and so on.
    pub messages: String,
    /// When the oldest of them arrived. Rewritten when the oldest message's age is more
    /// than twice, or less than half, the age this time gives (ages under a minute count
    /// as a minute).
    pub oldest_arrival: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time,
    /// The deferral reason most of the queued recipients carry, as Postfix gives it
    /// (for example `connect to mail.example.com[192.0.2.1]:25: Connection refused`);
    /// absent before the first delivery attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Messages a gateway still holds for a domain it no longer relays.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct DrainingAt {
    /// The MailGateway, `namespace/name`.
    pub gateway: String,
    /// Messages queued there, summed over its replicas.
    pub messages: u64,
}

/// A TXT record the domain's owner publishes to prove control of its DNS.
#[derive(JsonSchema, Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct OwnershipProof {
    /// The record's name, `_mx-operator.<domain>`.
    pub record: String,
    /// The record's value: a token for this gateway, namespace and domain.
    pub value: String,
}

impl MailDomain {
    /// The status condition of `type_`, if the operator has set it.
    pub fn condition(&self, type_: &str) -> Option<&Condition> {
        super::conditions::find(&self.status.as_ref()?.conditions, type_)
    }
}

const MIN_TTL: u32 = 60;
const MAX_TTL: u32 = 604_800;

impl MailDomainSpec {
    /// Every problem in the spec, with field paths.
    pub fn validate(&self) -> Result<(), ValidationError> {
        let mut problems = Problems::default();
        let domain = problems.check("spec.domain", normalize_domain(&self.domain));

        problems.k8s_name("spec.gatewayRef.name", &self.gateway_ref.name);
        if let Some(namespace) = &self.gateway_ref.namespace
            && !is_dns1123_label(namespace)
        {
            problems.push(
                "spec.gatewayRef.namespace",
                format!("{} is not a valid namespace name", quote(namespace)),
            );
        }

        problems.check("spec.primary.host", normalize_host(&self.primary.host));
        if self.primary.port == 0 {
            problems.push("spec.primary.port", "must be between 1 and 65535");
        }
        if let Some(domain) = &domain
            && normalize_host(&self.primary.host).is_ok_and(|host| host == *domain)
        {
            problems.push(
                "spec.primary.host",
                "must be a mail server host, not the domain itself (mail would loop through the domain's MX)",
            );
        }

        if !(MIN_TTL..=MAX_TTL).contains(&self.mx.ttl) {
            problems.push(
                "spec.mx.ttl",
                format!(
                    "must be between {MIN_TTL} and {MAX_TTL} seconds, not {}",
                    self.mx.ttl
                ),
            );
        }
        if let Some(dns) = &self.dns {
            problems.k8s_name("spec.dns.providerRef.name", &dns.provider_ref.name);
        }

        self.validate_recipients(domain.as_deref(), &mut problems);
        self.validate_policy(&mut problems);
        if let Some(delivery) = &self.delivery {
            delivery.validate_into("spec.delivery", &mut problems);
        }
        problems.check(
            "spec.departure.gracePeriod",
            parse_duration(&self.departure.grace_period),
        );
        problems.finish()
    }

    fn validate_recipients(&self, domain: Option<&str>, problems: &mut Problems) {
        let recipients = &self.recipients;
        if recipients.inline.is_empty()
            && recipients.config_map_ref.is_none()
            && recipients.secret_ref.is_none()
            && recipients.ldap.is_none()
            && recipients.http.is_none()
            && !recipients.catch_all
        {
            problems.push(
                "spec.recipients",
                "names no recipients: list them (inline, configMapRef, secretRef, ldap or http) or set catchAll: true",
            );
        }
        let inline = problems.check(
            "spec.recipients.inline",
            check_list_len(recipients.inline.len(), MAX_INLINE_RECIPIENTS),
        );
        if let (Some(()), Some(domain)) = (inline, domain) {
            for (i, address) in recipients.inline.iter().enumerate() {
                problems.check(
                    format!("spec.recipients.inline[{i}]"),
                    normalize_address(address, domain),
                );
            }
        }
        for (field, reference) in [
            ("configMapRef", &recipients.config_map_ref),
            ("secretRef", &recipients.secret_ref),
        ] {
            if let Some(reference) = reference {
                problems.k8s_name(format!("spec.recipients.{field}.name"), &reference.name);
                problems.k8s_key(format!("spec.recipients.{field}.key"), &reference.key);
            }
        }
        if let Some(max_age) = &recipients.max_age {
            problems.check("spec.recipients.maxAge", parse_duration(max_age));
        }
        if let Some(ldap) = &recipients.ldap {
            ldap.validate_into("spec.recipients.ldap", problems);
        }
        if let Some(http) = &recipients.http {
            http.validate_into("spec.recipients.http", problems);
        }
    }

    fn validate_policy(&self, problems: &mut Problems) {
        let policy = &self.policy;
        if let Some(size) = &policy.max_message_size {
            problems.check("spec.policy.maxMessageSize", parse_message_size(size));
        }
        for (field, len, max) in [
            ("rbls", policy.rbls.len(), MAX_RBLS),
            ("senderDeny", policy.sender_deny.len(), MAX_DENY_ENTRIES),
            ("clientDeny", policy.client_deny.len(), MAX_DENY_ENTRIES),
        ] {
            problems.check(format!("spec.policy.{field}"), check_list_len(len, max));
        }
        for (i, rbl) in policy.rbls.iter().enumerate() {
            problems.check(format!("spec.policy.rbls[{i}]"), normalize_domain(rbl));
        }
        for (i, sender) in policy.sender_deny.iter().enumerate() {
            problems.check(
                format!("spec.policy.senderDeny[{i}]"),
                normalize_sender_pattern(sender),
            );
        }
        for (i, client) in policy.client_deny.iter().enumerate() {
            problems.check(
                format!("spec.policy.clientDeny[{i}]"),
                parse_client_network(client),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(overrides: serde_json::Value) -> MailDomainSpec {
        crate::api::fixtures::domain_spec(overrides)
    }

    fn paths(spec: &MailDomainSpec) -> Vec<String> {
        match spec.validate() {
            Ok(()) => vec![],
            Err(e) => e.problems.into_iter().map(|p| p.path).collect(),
        }
    }

    #[test]
    fn every_secret_the_recipients_are_read_with_is_named() {
        let spec = spec(json!({"recipients": {
            "secretRef": {"name": "list", "key": "users"},
            "ldap": {"url": "ldaps://ldap.example.com", "bindDN": "cn=mx", "baseDN": "dc=example",
                     "passwordSecretRef": {"name": "bind", "key": "password"},
                     "caSecretRef": {"name": "ldap-ca", "key": "ca.crt"}},
            "http": {"url": "https://lists.example.com/users", "caSecretRef": {"name": "web-ca", "key": "ca.crt"},
                     "basicAuthSecretRef": {"name": "basic"}}}}));
        let names: Vec<&str> = spec.recipients.secret_names().collect();
        assert_eq!(names, ["list", "bind", "ldap-ca", "web-ca", "basic"]);
        let bearer = spec_of_http(json!({"url": "https://l.example.com/u",
            "bearerTokenSecretRef": {"name": "token", "key": "t"}}));
        assert_eq!(bearer.secret_names().collect::<Vec<_>>(), ["token"]);
    }

    fn spec_of_http(http: serde_json::Value) -> HttpSource {
        serde_json::from_value(http).unwrap()
    }

    #[test]
    fn minimal_spec_is_valid_with_safe_defaults() {
        let spec = spec(json!({}));
        assert_eq!(spec.validate(), Ok(()));
        assert_eq!(spec.role, DomainRole::Backup);
        assert_eq!(spec.primary.port, 25);
        assert_eq!(spec.primary.tls, TlsPolicy::May);
        assert!(!spec.recipients.catch_all);
        assert_eq!(spec.departure.action, DepartureAction::Remove);
        assert_eq!(spec.departure.grace_period, "72h");
        assert_eq!(spec.mx.ttl, 3600);
    }

    #[test]
    fn full_spec_is_valid() {
        let spec = spec(json!({
            "domain": "Bücher.Example.",
            "gatewayRef": {"name": "edge", "namespace": "mail-system"},
            "role": "Primary",
            "primary": {"host": "[2001:db8::25]", "port": 2525, "tls": "Verify"},
            "mx": {"preference": 10, "ttl": 300},
            "dns": {"providerRef": {"name": "knot"}},
            "recipients": {
                "inline": ["anna@bücher.example", "Bob@XN--BCHER-KVA.EXAMPLE"],
                "configMapRef": {"name": "users", "key": "addresses.txt"},
                "secretRef": {"name": "vip-users", "key": "list"},
                "maxAge": "24h",
            },
            "policy": {
                "maxMessageSize": "25Mi",
                "rbls": ["zen.spamhaus.org"],
                "senderDeny": ["spam@bad.example", "@worse.example"],
                "clientDeny": ["198.51.100.0/24", "2001:db8:bad::/48"],
                "requireTls": true,
            },
            "delivery": {"concurrency": 2, "rateDelay": "1s"},
            "departure": {"gracePeriod": "7d", "action": "Suspend"},
        }));
        assert_eq!(spec.validate(), Ok(()));
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let spec = spec(json!({
            "domain": "example.com",
            "gatewayRef": {"name": "Edge_1", "namespace": "Mail"},
            "primary": {"host": "mail.example.com\nrelayhost = evil", "port": 0},
            "mx": {"ttl": 5},
            "dns": {"providerRef": {"name": ""}},
            "recipients": {
                "inline": ["alice@example.com", "bob%evil.com@example.com", "carol@other.com"],
                "configMapRef": {"name": "users", "key": "bad key"},
                "maxAge": "soon",
            },
            "policy": {
                "maxMessageSize": "12",
                "rbls": ["zen spamhaus"],
                "senderDeny": ["x@y.example OK"],
                "clientDeny": ["300.1.1.1"],
            },
            "delivery": {"concurrency": 1000},
            "departure": {"gracePeriod": "3 days"},
        }));
        assert_eq!(
            paths(&spec),
            [
                "spec.gatewayRef.name",
                "spec.gatewayRef.namespace",
                "spec.primary.host",
                "spec.primary.port",
                "spec.mx.ttl",
                "spec.dns.providerRef.name",
                "spec.recipients.inline[1]",
                "spec.recipients.inline[2]",
                "spec.recipients.configMapRef.key",
                "spec.recipients.maxAge",
                "spec.policy.maxMessageSize",
                "spec.policy.rbls[0]",
                "spec.policy.senderDeny[0]",
                "spec.policy.clientDeny[0]",
                "spec.delivery.concurrency",
                "spec.departure.gracePeriod",
            ]
        );
    }

    #[test]
    fn the_message_names_each_field() {
        let spec = spec(json!({"domain": "exa mple.com", "primary": {"port": 0}}));
        let message = spec.validate().unwrap_err().to_string();
        assert!(
            message.contains("spec.domain: \"exa mple.com\" contains whitespace"),
            "{message}"
        );
        assert!(
            message.contains("spec.primary.port: must be between 1 and 65535"),
            "{message}"
        );
    }

    #[test]
    fn no_recipients_and_no_catch_all_is_refused() {
        let spec = spec(json!({"recipients": {"inline": []}}));
        assert_eq!(paths(&spec), ["spec.recipients"]);
        let spec = self::spec(json!({"recipients": {"inline": [], "catchAll": true}}));
        assert_eq!(spec.validate(), Ok(()));
    }

    #[test]
    fn long_lists_are_refused_once() {
        let inline: Vec<String> = (0..=MAX_INLINE_RECIPIENTS)
            .map(|i| format!("u{i}@example.com"))
            .collect();
        let rbls = vec!["zen.spamhaus.org"; MAX_RBLS + 1];
        let spec = spec(json!({"recipients": {"inline": inline}, "policy": {"rbls": rbls}}));
        assert_eq!(paths(&spec), ["spec.recipients.inline", "spec.policy.rbls"]);
    }

    #[test]
    fn primary_must_not_be_the_domain_itself() {
        let spec = spec(json!({"primary": {"host": "EXAMPLE.com."}}));
        assert_eq!(paths(&spec), ["spec.primary.host"]);
    }

    #[test]
    fn injection_in_the_domain_is_refused() {
        for domain in [
            "example.com\nmynetworks = 0.0.0.0/0",
            "example.com,evil.org",
            "example.com OK",
            "example.com#",
            "example.com\r",
        ] {
            let spec = spec(json!({"domain": domain, "recipients": {"catchAll": true}}));
            assert_eq!(paths(&spec), ["spec.domain"], "{domain:?}");
        }
    }
}
