//! Postfix configuration rendered from the API objects (pure, no I/O).

use crate::api::domain::MailDomainSpec;
use crate::api::gateway::MailGatewaySpec;
use crate::api::validate::{normalize_domain, normalize_host};
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

/// Relay ConfigMaps carry this label with the gateway's name; the agent selects on it.
pub const RELAY_GATEWAY_LABEL: &str = "mx-operator.io/relay-for";
/// The gateway ConfigMap carries this label with the gateway's name.
pub const GATEWAY_CONFIG_LABEL: &str = "mx-operator.io/gateway-config-for";

/// How a domain is relayed right now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RelayMode {
    Active,
    Suspended,
    Stale,
    Withdrawn,
}

/// What the operator knows about one domain.
pub struct DomainInput<'a> {
    pub spec: &'a MailDomainSpec,
    pub recipients: &'a BTreeSet<String>,
    pub mode: RelayMode,
}

#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("{field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
}

fn invalid(field: &'static str) -> impl FnOnce(String) -> RenderError {
    move |message| RenderError::Invalid { field, message }
}

/// `data` of the relay ConfigMap for one domain.
pub fn relay_configmap_data(input: &DomainInput) -> Result<BTreeMap<String, String>, RenderError> {
    let domain = normalize_domain(&input.spec.domain).map_err(invalid("spec.domain"))?;
    let host = normalize_host(&input.spec.primary.host).map_err(invalid("spec.primary.host"))?;
    let mut data = BTreeMap::new();
    data.insert("domain".into(), domain.clone());
    if input.mode == RelayMode::Withdrawn {
        return Ok(data);
    }
    data.insert("relay_domains".into(), format!("{domain} OK\n"));
    let recipients = if input.spec.recipients.catch_all {
        format!("@{domain} OK\n")
    } else {
        input
            .recipients
            .iter()
            .map(|r| format!("{r} OK\n"))
            .collect()
    };
    data.insert("relay_recipients".into(), recipients);
    data.insert(
        "transport".into(),
        format!("{domain} smtp:[{host}]:{}\n", input.spec.primary.port),
    );
    Ok(data)
}

/// `data` of the gateway ConfigMap.
pub fn gateway_configmap_data(
    gateway_name: &str,
    gateway: &MailGatewaySpec,
    _domains: &[DomainInput],
    load_balancer_ip: Option<IpAddr>,
) -> Result<BTreeMap<String, String>, RenderError> {
    let hostname = gateway
        .mx_hostnames
        .first()
        .map(|h| normalize_domain(h))
        .transpose()
        .map_err(invalid("spec.mxHostnames"))?
        .unwrap_or_else(|| gateway_name.to_string());
    // Per-domain settings live in the maps, so main.cf stays the same (no Postfix reload)
    // when domains come and go.
    let mut main_cf = format!(
        "myhostname = {hostname}\nmynetworks = 127.0.0.0/8\nrelay_domains = lmdb:$config_directory/maps/relay_domains\n\
         relay_recipient_maps = lmdb:$config_directory/maps/relay_recipients\n\
         transport_maps = lmdb:$config_directory/maps/transport\n\
         smtpd_recipient_restrictions = reject_unauth_destination\n"
    );
    if let Some(ip) = load_balancer_ip {
        main_cf.push_str(&format!("proxy_interfaces = {ip}\n"));
    }
    Ok(BTreeMap::from([
        ("main.cf".to_string(), main_cf),
        ("master.cf".to_string(), String::new()),
    ]))
}
