//! The gateway ConfigMap: the `main.cf` and `master.cf` every replica of a gateway shares.
//! Per-domain settings are not here: they come from the MailRelays, so a domain that
//! comes or goes changes lookup tables, not this file, and Postfix is not reloaded.

use super::postfix::{seconds, token};
use super::{RenderError, invalid, keys};
use crate::api::gateway::{MailGatewaySpec, NotificationMode, Notifications};
use crate::api::validate::{normalize_domain, normalize_mailbox, parse_duration, parse_next_hop};
use std::collections::BTreeMap;
use std::net::IpAddr;

/// Where the pod mounts the gateway's TLS Secret.
pub const TLS_DIRECTORY: &str = "/etc/mx-gateway/tls";
/// Largest message accepted when no served domain sets `policy.maxMessageSize`.
pub const DEFAULT_MESSAGE_SIZE_LIMIT: u64 = 10_240_000;

/// `data` of the gateway ConfigMap.
pub fn gateway_configmap_data(
    gateway_name: &str,
    gateway: &MailGatewaySpec,
    load_balancer_ip: Option<IpAddr>,
) -> Result<BTreeMap<String, String>, RenderError> {
    let hostname = match gateway.mx_hostnames.first() {
        Some(host) => normalize_domain(host).map_err(invalid("spec.mxHostnames"))?,
        None => gateway_name.to_string(),
    };
    let hostname = token(&hostname).map_err(invalid("spec.mxHostnames"))?;
    let lifetime = parse_duration(&gateway.queue.max_queue_lifetime)
        .map_err(invalid("spec.queue.maxQueueLifetime"))?;
    let lifetime = seconds(lifetime);
    let mut main_cf = format!(
        "# Rendered by mx-operator for MailGateway {gateway_name}; the agent appends the\n\
         # settings of the domains it relays.\n\
         compatibility_level = 3.6\n\
         myhostname = {hostname}\n\
         myorigin = $myhostname\n\
         smtpd_banner = $myhostname ESMTP\n\
         # A relay only: no local mailboxes, nothing trusted by address.\n\
         mydestination =\n\
         mynetworks = 127.0.0.1/32\n\
         local_recipient_maps = lmdb:$config_directory/maps/no_local_recipients\n\
         local_transport = error:5.1.1 this gateway has no mailboxes\n\
         default_transport = error:5.7.1 this gateway relays only its own domains\n\
         relay_transport = $default_transport\n\
         # Domains and recipients come from lookup tables the agent keeps current.\n\
         relay_domains = lmdb:$config_directory/maps/relay_domains\n\
         relay_recipient_maps = lmdb:$config_directory/maps/relay_recipients\n\
         transport_maps = lmdb:$config_directory/maps/transport\n\
         # example.com in relay_domains must not also accept sub.example.com.\n\
         parent_domain_matches_subdomains =\n\
         # Sender-specified routing is a relay trick; never honour it.\n\
         allow_percent_hack = no\n\
         swap_bangpath = no\n\
         allow_untrusted_routing = no\n\
         disable_vrfy_command = yes\n\
         # ETRN would let anyone start deliveries to the primaries and around their pace;\n\
         # queued mail leaves on its own schedule. (postqueue -f does not need the flush service.)\n\
         smtpd_etrn_restrictions = reject\n\
         fast_flush_domains =\n\
         smtpd_helo_required = yes\n\
         smtpd_relay_restrictions = reject_unauth_destination\n\
         smtpd_recipient_restrictions = reject_non_fqdn_recipient, reject_unauth_destination, \
         check_recipient_access lmdb:$config_directory/maps/recipient_policy, reject_unlisted_recipient\n\
         smtpd_reject_unlisted_recipient = yes\n\
         unknown_relay_recipient_reject_code = 550\n\
         # A backup MX must outlast the primary's outage; mail is never dropped before this.\n\
         maximal_queue_lifetime = {lifetime}\n\
         bounce_queue_lifetime = {lifetime}\n\
         smtp_tls_CAfile = /etc/ssl/certs/ca-certificates.crt\n\
         queue_directory = /var/spool/postfix\n\
         data_directory = /var/lib/postfix\n\
         maillog_file = /dev/stdout\n"
    );
    main_cf.push_str(&notification_settings(&gateway.notifications, hostname)?);
    if let Some(ip) = load_balancer_ip {
        // Mail addressed to the load balancer's address is ours, not a relay loop.
        main_cf.push_str(&format!("proxy_interfaces = {ip}\n"));
    }
    if gateway.tls.is_some() {
        main_cf.push_str(&format!(
            "smtpd_tls_security_level = may\n\
             smtpd_tls_chain_files = {TLS_DIRECTORY}/tls.key, {TLS_DIRECTORY}/tls.crt\n"
        ));
    }
    Ok(BTreeMap::from([
        (keys::MAIN_CF.to_string(), main_cf),
        (keys::MASTER_CF.to_string(), MASTER_CF.to_string()),
        // Replicas past spec.replicas are on their way out (see controller/mailgateway/scale.rs).
        (
            keys::RETIRING_FROM.to_string(),
            gateway.replicas.to_string(),
        ),
    ]))
}

/// Where notifications go. Mail to a domain not relayed here meets `default_transport`
/// (refused); only mail from the null sender (the senders' DSNs, delay warnings) and from
/// the double-bounce sender (the postmaster's copies) is sent on by `mx-notify`, so
/// nothing else can leave the gateway even if it got into the queue.
fn notification_settings(
    notifications: &Notifications,
    hostname: &str,
) -> Result<String, RenderError> {
    let route = match notifications.mode {
        NotificationMode::Direct => NOTIFY_SERVICE.to_string(),
        NotificationMode::RelayHost => {
            let host = notifications.relay_host.as_deref().unwrap_or_default();
            let next_hop = parse_next_hop(host).map_err(invalid("spec.notifications.relayHost"))?;
            format!("{NOTIFY_SERVICE}:{next_hop}")
        }
        NotificationMode::Off => {
            "discard:delivery status notifications are off (spec.notifications.mode Off)".into()
        }
    };
    let mut settings = format!(
        "# Delivery status notifications of accepted mail, and nothing else, leave here.\n\
         sender_dependent_default_transport_maps = inline:{{ {{<>={route}}}, {{double-bounce@{hostname}={route}}} }}\n\
         empty_address_default_transport_maps_lookup_key = <>\n"
    );
    match &notifications.postmaster {
        Some(postmaster) => {
            // A plain parameter value: normalize_mailbox leaves no space, comma, `#` or `$`.
            let postmaster =
                normalize_mailbox(postmaster).map_err(invalid("spec.notifications.postmaster"))?;
            settings.push_str(&format!(
                "notify_classes = bounce, 2bounce, resource, software\n\
                 # Not for the SMTP server: its `bounce` copies are transcripts of refused\n\
                 # sessions, one mail per refused spammer.\n\
                 {SMTPD_NOTIFY_CLASSES} = resource, software\n\
                 bounce_notice_recipient = {postmaster}\n\
                 2bounce_notice_recipient = {postmaster}\n\
                 error_notice_recipient = {postmaster}\n"
            ));
        }
        // The default recipient, postmaster@ this gateway, is not relayed here.
        None => settings.push_str(&format!("notify_classes =\n{SMTPD_NOTIFY_CLASSES} =\n")),
    }
    let warning = match &notifications.delay_warning_time {
        Some(time) => {
            seconds(parse_duration(time).map_err(invalid("spec.notifications.delayWarningTime"))?)
        }
        None => "0h".into(),
    };
    settings.push_str(&format!("delay_warning_time = {warning}\n"));
    Ok(settings)
}

/// The delivery service of notifications: few at a time, STARTTLS when offered.
const NOTIFY_SERVICE: &str = "mx-notify";
/// `notify_classes` of the SMTP server (see `MASTER_CF`).
const SMTPD_NOTIFY_CLASSES: &str = "mx_smtpd_notify_classes";

/// Postfix's own services, unchrooted (the container is the boundary), with the SMTP
/// listener first. The agent adds one delivery transport per class of primary. `showq`
/// serves one listing per process, so each of the agent's queue reads needs a master that
/// still starts processes: a stopped or wedged master shows as a stalled read (and the
/// Postfix container's liveness probe fails), not hidden behind a `showq` left running.
const MASTER_CF: &str = "\
smtp      inet  n       -       n       -       -       smtpd -o notify_classes=$mx_smtpd_notify_classes
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq -o max_use=1
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
mx-notify unix  -       -       n       -       2       smtp -o smtp_tls_security_level=may
";

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(value: serde_json::Value) -> MailGatewaySpec {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn relay_only_main_cf() {
        let data = gateway_configmap_data(
            "edge",
            &spec(serde_json::json!({"mxHostnames": ["MX1.Relay.Example.NET."]})),
            None,
        )
        .unwrap();
        let main = &data[keys::MAIN_CF];
        for line in [
            "myhostname = mx1.relay.example.net\n",
            "mydestination =\n",
            "mynetworks = 127.0.0.1/32\n",
            "smtpd_relay_restrictions = reject_unauth_destination\n",
            "unknown_relay_recipient_reject_code = 550\n",
            "smtpd_etrn_restrictions = reject\n",
            "fast_flush_domains =\n",
            "maximal_queue_lifetime = 432000s\n",
            "allow_percent_hack = no\n",
        ] {
            assert!(main.contains(line), "missing {line:?}");
        }
        assert!(!main.contains("proxy_interfaces"));
        assert!(!main.contains("permit_mynetworks"));
        assert!(data[keys::MASTER_CF].starts_with("smtp      inet"));
    }

    #[test]
    fn load_balancer_address_and_tls() {
        let data = gateway_configmap_data(
            "edge",
            &spec(serde_json::json!({"mxHostnames": ["mx1.relay.example.net"], "tls": {"secretName": "cert"}})),
            Some("203.0.113.25".parse().unwrap()),
        )
        .unwrap();
        let main = &data[keys::MAIN_CF];
        assert!(main.contains("proxy_interfaces = 203.0.113.25\n"));
        assert!(main.contains("smtpd_tls_chain_files = /etc/mx-gateway/tls/tls.key"));
    }

    #[test]
    fn only_notifications_leave_and_only_where_the_spec_says() {
        let main_cf = |notifications: serde_json::Value| {
            let spec = spec(serde_json::json!({"mxHostnames": ["mx1.relay.example.net"],
                "notifications": notifications}));
            gateway_configmap_data("edge", &spec, None).unwrap()[keys::MAIN_CF].clone()
        };
        let direct = main_cf(serde_json::json!({}));
        assert!(direct.contains(
            "sender_dependent_default_transport_maps = inline:{ {<>=mx-notify}, {double-bounce@mx1.relay.example.net=mx-notify} }\n"
        ), "{direct}");
        // Every other sender still meets the refusing default.
        assert!(direct.contains("default_transport = error:5.7.1 "));
        assert!(direct.contains("notify_classes =\n"));
        assert!(direct.contains("delay_warning_time = 0h\n"));

        let relayed = main_cf(serde_json::json!({"mode": "RelayHost",
            "relayHost": "192.0.2.25:2525", "postmaster": "PM@Ops.Example.NET",
            "delayWarningTime": "4h"}));
        assert!(
            relayed.contains("{<>=mx-notify:[192.0.2.25]:2525}"),
            "{relayed}"
        );
        assert!(relayed.contains("bounce_notice_recipient = PM@ops.example.net\n"));
        assert!(relayed.contains("notify_classes = bounce, 2bounce, resource, software\n"));
        assert!(relayed.contains("mx_smtpd_notify_classes = resource, software\n"));
        assert!(relayed.contains("delay_warning_time = 14400s\n"));

        let off = main_cf(serde_json::json!({"mode": "Off"}));
        assert!(
            off.contains("{<>=discard:delivery status notifications are off"),
            "{off}"
        );
        assert!(!off.contains("mx-notify"));
    }

    #[test]
    fn without_hostnames_the_gateway_name_is_used() {
        let data =
            gateway_configmap_data("edge", &spec(serde_json::json!({"mxHostnames": []})), None)
                .unwrap();
        assert!(data[keys::MAIN_CF].contains("myhostname = edge\n"));
    }
}
