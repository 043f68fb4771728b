//! Bad input (issue #9): tables of malformed and hostile specs. Every one is refused with a
//! clear condition (or by the API server's schema), nothing of it is rendered, and the
//! operator keeps serving valid objects afterwards.

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, ListParams, PostParams};
use mx_operator::api::conditions::{Condition, READY, find};
use mx_operator::api::{ConditionStatus, MailDomain, MailGateway, MailRelay};
use mx_operator_tests::TestNamespace;
use mx_operator_tests::fixtures::{apply, domain, gateway, merge, try_apply};
use mx_operator_tests::operator::namespace_with_operator;
use mx_operator_tests::wait::poll_every;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const LIMIT: Duration = Duration::from_secs(45);
/// Characters of the longest values: a megabyte, most of what one object may hold.
const HUGE: usize = 1_000_000;
const POLL: Duration = Duration::from_millis(500);
/// Longest refusal a person should have to read in a condition.
const MAX_MESSAGE_BYTES: usize = 8 * 1024;

/// Characters that end or split an entry in a Postfix file or map, start a comment or an
/// expansion, or route mail, each with a name for the object that carries it.
const INJECTIONS: [(&str, &str); 18] = [
    ("newline", "\n"),
    ("cr", "\r"),
    ("nul", "\0"),
    ("u2028", "\u{2028}"),
    ("u0085", "\u{85}"),
    ("tab", "\t"),
    ("comma", ","),
    ("space", " "),
    ("equals", "="),
    ("hash", "#"),
    ("dollar", "$"),
    ("braces", "{}"),
    ("at", "@"),
    ("percent", "%"),
    ("bang", "!"),
    ("dquote", "\""),
    ("squote", "'"),
    ("backslash", "\\"),
];

/// Characters RFC 5321 allows in a local part (`atext`); they reach Postfix only as lookup
/// keys of an lmdb map, where they are inert, so an address may contain them.
const LOCAL_PART_CHARACTERS: [&str; 3] = ["=", "{}", "'"];

/// One hostile object: its name, what is merged into a valid spec, and the field path the
/// refusal must name.
struct Case {
    name: String,
    extra: Value,
    path: String,
}

fn case(name: impl Into<String>, path: impl Into<String>, extra: Value) -> Case {
    Case {
        name: name.into(),
        extra,
        path: path.into(),
    }
}

fn domain_cases() -> Vec<Case> {
    let mut cases = vec![];
    for (what, c) in INJECTIONS {
        cases.push(case(
            format!("domain-{what}"),
            "spec.domain",
            json!({"domain": format!("bad{c}evil.example")}),
        ));
        if !LOCAL_PART_CHARACTERS.contains(&c) {
            let name = format!("inline-{what}");
            let domain = format!("{name}.example");
            cases.push(case(
                &name,
                "spec.recipients.inline[1]",
                json!({"domain": domain, "recipients": {"inline": [
                    format!("alice@{domain}"),
                    format!("bob{c}mallory@{domain}"),
                ]}}),
            ));
        }
    }
    let look_alikes = [
        ("fullwidth", "\u{FF45}xample.com"),
        ("soft-hyphen", "ex\u{AD}ample.com"),
        ("ideographic-stop", "example\u{3002}com"),
        ("zwj", "ex\u{200D}ample.com"),
        ("zwnj", "ex\u{200C}ample.com"),
        ("cyrillic-a", "p\u{430}ypal.com"),
        ("punycode-cyrillic-a", "xn--pypal-4ve.com"),
        ("greek-omicron", "g\u{3BF}ogle.com"),
        ("kelvin", "\u{212A}ey.example"),
        ("math-bold", "\u{1D41E}xample.com"),
    ];
    for (what, name) in look_alikes {
        cases.push(case(
            format!("confusable-{what}"),
            "spec.domain",
            json!({"domain": name}),
        ));
    }
    cases.extend([
        case(
            "domain-long-label",
            "spec.domain",
            json!({"domain": format!("{}.example", "a".repeat(64))}),
        ),
        // A megabyte in one field: quoted in full, the refusal would not fit next to it in
        // one etcd object, and the user would get no condition at all.
        case(
            "domain-huge",
            "spec.domain",
            json!({"domain": format!("{}.example", "a".repeat(HUGE))}),
        ),
        case(
            "gateway-newline",
            "spec.gatewayRef.name",
            json!({"gatewayRef": {"name": "edge\nrelayhost = evil"}}),
        ),
        case(
            "gateway-space",
            "spec.gatewayRef.name",
            json!({"gatewayRef": {"name": "edge OK"}}),
        ),
        case(
            "gateway-hash",
            "spec.gatewayRef.name",
            json!({"gatewayRef": {"name": "edge#"}}),
        ),
        case(
            "gwns-newline",
            "spec.gatewayRef.namespace",
            json!({"gatewayRef": {"name": "edge", "namespace": "mail\nsystem"}}),
        ),
        case(
            "gwns-traversal",
            "spec.gatewayRef.namespace",
            json!({"gatewayRef": {"name": "edge", "namespace": "../kube-system"}}),
        ),
        case(
            "gwns-huge",
            "spec.gatewayRef.namespace",
            json!({"gatewayRef": {"name": "edge", "namespace": "a".repeat(HUGE)}}),
        ),
        case(
            "gwns-space",
            "spec.gatewayRef.namespace",
            json!({"gatewayRef": {"name": "edge", "namespace": "mail system"}}),
        ),
        case(
            "host-newline",
            "spec.primary.host",
            json!({"primary": {"host": "mail.example\nrelayhost = [evil.example]"}}),
        ),
        case(
            "host-comma",
            "spec.primary.host",
            json!({"primary": {"host": "192.0.2.25,evil.example"}}),
        ),
        case(
            "host-space",
            "spec.primary.host",
            json!({"primary": {"host": "mail.example OK"}}),
        ),
        case(
            "host-port",
            "spec.primary.host",
            json!({"primary": {"host": "[192.0.2.25]:2525"}}),
        ),
        case(
            "host-dollar",
            "spec.primary.host",
            json!({"primary": {"host": "$relayhost"}}),
        ),
        case(
            "host-equals",
            "spec.primary.host",
            json!({"primary": {"host": "relayhost=evil.example"}}),
        ),
        case(
            "host-cyrillic",
            "spec.primary.host",
            json!({"primary": {"host": "m\u{430}il.example.com"}}),
        ),
        case(
            "host-fullwidth-digits",
            "spec.primary.host",
            json!({"primary": {"host": "\u{FF11}92.0.2.25"}}),
        ),
        case(
            "port-zero",
            "spec.primary.port",
            json!({"primary": {"port": 0}}),
        ),
        case("ttl-low", "spec.mx.ttl", json!({"mx": {"ttl": 1}})),
        case(
            "ttl-high",
            "spec.mx.ttl",
            json!({"mx": {"ttl": 4_294_967_295_u32}}),
        ),
        case(
            "provider-newline",
            "spec.dns.providerRef.name",
            json!({"dns": {"providerRef": {"name": "knot\nx"}}}),
        ),
        case(
            "provider-comma",
            "spec.dns.providerRef.name",
            json!({"dns": {"providerRef": {"name": "knot,evil"}}}),
        ),
        case(
            "inline-foreign",
            "spec.recipients.inline[0]",
            json!({"recipients": {"inline": ["alice@evil.example"]}}),
        ),
        case(
            "inline-cyrillic",
            "spec.recipients.inline[0]",
            json!({"domain": "inline-cyrillic.example",
                   "recipients": {"inline": ["\u{430}lice@inline-cyrillic.example"]}}),
        ),
        case(
            "inline-fullwidth-domain",
            "spec.recipients.inline[0]",
            json!({"domain": "inline-fw.example",
                   "recipients": {"inline": ["alice@inline-\u{FF46}w.example"]}}),
        ),
        case(
            "cm-name-newline",
            "spec.recipients.configMapRef.name",
            json!({"recipients": {"configMapRef": {"name": "users\nx", "key": "list"}}}),
        ),
        case(
            "cm-name-space",
            "spec.recipients.configMapRef.name",
            json!({"recipients": {"configMapRef": {"name": "user list", "key": "list"}}}),
        ),
        case(
            "cm-key-newline",
            "spec.recipients.configMapRef.key",
            json!({"recipients": {"configMapRef": {"name": "users", "key": "list\nx"}}}),
        ),
        case(
            "cm-key-dotdot",
            "spec.recipients.configMapRef.key",
            json!({"recipients": {"configMapRef": {"name": "users", "key": ".."}}}),
        ),
        case(
            "cm-key-slash",
            "spec.recipients.configMapRef.key",
            json!({"recipients": {"configMapRef": {"name": "users", "key": "../etc/passwd"}}}),
        ),
        case(
            "cm-key-equals",
            "spec.recipients.configMapRef.key",
            json!({"recipients": {"configMapRef": {"name": "users", "key": "k=v"}}}),
        ),
        case(
            "secret-name-comma",
            "spec.recipients.secretRef.name",
            json!({"recipients": {"secretRef": {"name": "vip,users", "key": "list"}}}),
        ),
        case(
            "secret-key-hash",
            "spec.recipients.secretRef.key",
            json!({"recipients": {"secretRef": {"name": "vip", "key": "list#1"}}}),
        ),
        case(
            "maxage-newline",
            "spec.recipients.maxAge",
            json!({"recipients": {"maxAge": "24h\nx"}}),
        ),
        case(
            "maxage-comment",
            "spec.recipients.maxAge",
            json!({"recipients": {"maxAge": "24h # x"}}),
        ),
        case(
            "maxage-negative",
            "spec.recipients.maxAge",
            json!({"recipients": {"maxAge": "-1h"}}),
        ),
        case(
            "size-newline",
            "spec.policy.maxMessageSize",
            json!({"policy": {"maxMessageSize": "25Mi\nx"}}),
        ),
        case(
            "size-comma",
            "spec.policy.maxMessageSize",
            json!({"policy": {"maxMessageSize": "25Mi,"}}),
        ),
        case(
            "size-dollar",
            "spec.policy.maxMessageSize",
            json!({"policy": {"maxMessageSize": "$size"}}),
        ),
        // The gateway takes the largest limit of its domains: this one would set it for
        // every tenant.
        case(
            "size-huge",
            "spec.policy.maxMessageSize",
            json!({"policy": {"maxMessageSize": "100Ti"}}),
        ),
        case(
            "rbl-equals",
            "spec.policy.rbls[0]",
            json!({"policy": {"rbls": ["zen.spamhaus.org=127.0.0.2"]}}),
        ),
        case(
            "rbl-comma",
            "spec.policy.rbls[0]",
            json!({"policy": {"rbls": ["zen.spamhaus.org, permit"]}}),
        ),
        case(
            "rbl-newline",
            "spec.policy.rbls[0]",
            json!({"policy": {"rbls": ["zen.spamhaus.org\npermit"]}}),
        ),
        case(
            "rbl-dollar",
            "spec.policy.rbls[0]",
            json!({"policy": {"rbls": ["$rbl.example"]}}),
        ),
        case(
            "rbl-cyrillic",
            "spec.policy.rbls[0]",
            json!({"policy": {"rbls": ["z\u{435}n.spamhaus.org"]}}),
        ),
        case(
            "sender-space",
            "spec.policy.senderDeny[0]",
            json!({"policy": {"senderDeny": ["spam@bad.example OK"]}}),
        ),
        case(
            "sender-newline",
            "spec.policy.senderDeny[0]",
            json!({"policy": {"senderDeny": ["spam@bad.example\nfoo"]}}),
        ),
        case(
            "sender-comma",
            "spec.policy.senderDeny[0]",
            json!({"policy": {"senderDeny": ["@bad.example,"]}}),
        ),
        case(
            "sender-percent",
            "spec.policy.senderDeny[0]",
            json!({"policy": {"senderDeny": ["a%b@bad.example"]}}),
        ),
        case(
            "sender-quoted",
            "spec.policy.senderDeny[0]",
            json!({"policy": {"senderDeny": ["\"x y\"@bad.example"]}}),
        ),
        case(
            "sender-cyrillic",
            "spec.policy.senderDeny[0]",
            json!({"policy": {"senderDeny": ["@b\u{430}d.example"]}}),
        ),
        case(
            "client-space",
            "spec.policy.clientDeny[0]",
            json!({"policy": {"clientDeny": ["192.0.2.0/24 OK"]}}),
        ),
        case(
            "client-newline",
            "spec.policy.clientDeny[0]",
            json!({"policy": {"clientDeny": ["192.0.2.0/24\n0.0.0.0/0"]}}),
        ),
        case(
            "client-zone",
            "spec.policy.clientDeny[0]",
            json!({"policy": {"clientDeny": ["fe80::1%eth0"]}}),
        ),
        case(
            "client-comma",
            "spec.policy.clientDeny[0]",
            json!({"policy": {"clientDeny": ["192.0.2.0/24,0.0.0.0/0"]}}),
        ),
        case(
            "client-hex",
            "spec.policy.clientDeny[0]",
            json!({"policy": {"clientDeny": ["0x7f.1"]}}),
        ),
        case(
            "client-hash",
            "spec.policy.clientDeny[0]",
            json!({"policy": {"clientDeny": ["#192.0.2.1"]}}),
        ),
        case(
            "rate-newline",
            "spec.delivery.rateDelay",
            json!({"delivery": {"rateDelay": "1s\nx"}}),
        ),
        case(
            "rate-dollar",
            "spec.delivery.rateDelay",
            json!({"delivery": {"rateDelay": "1s$x"}}),
        ),
        case(
            "concurrency-high",
            "spec.delivery.concurrency",
            json!({"delivery": {"concurrency": 1000}}),
        ),
        case(
            "grace-newline",
            "spec.departure.gracePeriod",
            json!({"departure": {"gracePeriod": "72h\nx"}}),
        ),
        case(
            "grace-comment",
            "spec.departure.gracePeriod",
            json!({"departure": {"gracePeriod": "72h # x"}}),
        ),
        case(
            "grace-expansion",
            "spec.departure.gracePeriod",
            json!({"departure": {"gracePeriod": "${grace}"}}),
        ),
    ]);

    // Huge lists. Thousands of bad entries: one condition that lists the first problems.
    let bad: Vec<String> = (0..5_000).map(|i| format!("bad entry {i}")).collect();
    cases.push(case(
        "inline-5000-bad",
        "spec.recipients.inline[0]",
        json!({"recipients": {"inline": bad}}),
    ));
    // More valid entries than a MailDomain may list inline (a ConfigMap takes long lists).
    let domain = "inline-10001.example";
    let many: Vec<String> = (0..10_001).map(|i| format!("u{i}@{domain}")).collect();
    cases.push(case(
        "inline-10001",
        "spec.recipients.inline",
        json!({"domain": domain, "recipients": {"inline": many}}),
    ));
    let rbls: Vec<String> = (0..17).map(|i| format!("rbl{i}.example")).collect();
    cases.push(case(
        "rbls-17",
        "spec.policy.rbls",
        json!({"policy": {"rbls": rbls}}),
    ));
    cases
}

fn gateway_cases() -> Vec<Case> {
    vec![
        case(
            "gw-mx-newline",
            "spec.mxHostnames[0]",
            json!({"mxHostnames": ["mx.example.net\nmynetworks = 0.0.0.0/0"]}),
        ),
        case(
            "gw-mx-comma",
            "spec.mxHostnames[0]",
            json!({"mxHostnames": ["mx.example.net,evil.example"]}),
        ),
        case(
            "gw-mx-space",
            "spec.mxHostnames[0]",
            json!({"mxHostnames": ["mx.example.net OK"]}),
        ),
        case(
            "gw-mx-dollar",
            "spec.mxHostnames[0]",
            json!({"mxHostnames": ["$myhostname"]}),
        ),
        case(
            "gw-mx-cyrillic",
            "spec.mxHostnames[0]",
            json!({"mxHostnames": ["m\u{445}.example.net"]}),
        ),
        case(
            "gw-mx-fullwidth-stop",
            "spec.mxHostnames[0]",
            json!({"mxHostnames": ["mx\u{FF0E}example.net"]}),
        ),
        case(
            "gw-lb-newline",
            "spec.service.loadBalancerIP",
            json!({"service": {"loadBalancerIP": "203.0.113.10\nproxy_interfaces = 0.0.0.0"}}),
        ),
        case(
            "gw-lb-comma",
            "spec.service.loadBalancerIP",
            json!({"service": {"loadBalancerIP": "203.0.113.10, 0.0.0.0"}}),
        ),
        case(
            "gw-annotation-key",
            "spec.service.annotations",
            json!({"service": {"annotations": {"bad key\nx": "v"}}}),
        ),
        case(
            "gw-queue-size",
            "spec.queue.size",
            json!({"queue": {"size": "10Gi\nx"}}),
        ),
        case(
            "gw-queue-lifetime",
            "spec.queue.maxQueueLifetime",
            json!({"queue": {"maxQueueLifetime": "5d # x"}}),
        ),
        case(
            "gw-storage-class",
            "spec.queue.storageClassName",
            json!({"queue": {"storageClassName": "fast ssd"}}),
        ),
        case(
            "gw-tls-secret",
            "spec.tls.secretName",
            json!({"tls": {"secretName": "tls\ncert"}}),
        ),
        case(
            "gw-rate-delay",
            "spec.delivery.rateDelay",
            json!({"delivery": {"rateDelay": "1s,2s"}}),
        ),
        case(
            "gw-probe",
            "spec.probeAddress",
            json!({"probeAddress": "gw.example:25\nx"}),
        ),
        case("gw-image", "spec.image", json!({"image": "gateway:tag\nx"})),
        case(
            "gw-image-huge",
            "spec.image",
            json!({"image": format!("gateway:{}\n", "a".repeat(HUGE))}),
        ),
        case(
            "gw-lb-huge",
            "spec.service.loadBalancerIP",
            json!({"service": {"loadBalancerIP": "1".repeat(HUGE)}}),
        ),
    ]
}

/// A wrong type or value written through the raw API; the server must refuse it with a
/// message naming `expect` (a field path, or what was too large).
struct RawCase {
    name: &'static str,
    gateway: bool,
    mutate: fn(&mut Value),
    expect: &'static str,
}

fn raw_cases() -> Vec<RawCase> {
    fn raw(name: &'static str, expect: &'static str, mutate: fn(&mut Value)) -> RawCase {
        RawCase {
            name,
            gateway: false,
            mutate,
            expect,
        }
    }
    fn raw_gateway(name: &'static str, expect: &'static str, mutate: fn(&mut Value)) -> RawCase {
        RawCase {
            name,
            gateway: true,
            mutate,
            expect,
        }
    }
    vec![
        raw("port-string", "spec.primary.port", |o| {
            o["spec"]["primary"]["port"] = json!("twenty-five")
        }),
        raw("port-too-big", "spec.primary.port", |o| {
            o["spec"]["primary"]["port"] = json!(70_000)
        }),
        raw("port-negative", "spec.primary.port", |o| {
            o["spec"]["primary"]["port"] = json!(-25)
        }),
        raw("port-float", "spec.primary.port", |o| {
            o["spec"]["primary"]["port"] = json!(25.5)
        }),
        raw("ttl-string", "spec.mx.ttl", |o| {
            o["spec"]["mx"] = json!({"ttl": "3600"})
        }),
        raw("ttl-negative", "spec.mx.ttl", |o| {
            o["spec"]["mx"] = json!({"ttl": -5})
        }),
        raw("ttl-overflow", "spec.mx.ttl", |o| {
            o["spec"]["mx"] = json!({"ttl": 4_294_967_296_u64})
        }),
        raw("preference-overflow", "spec.mx.preference", |o| {
            o["spec"]["mx"] = json!({"preference": 65_536})
        }),
        raw("concurrency-overflow", "spec.delivery.concurrency", |o| {
            o["spec"]["delivery"] = json!({"concurrency": 2_147_483_648_u64})
        }),
        raw("concurrency-string", "spec.delivery.concurrency", |o| {
            o["spec"]["delivery"] = json!({"concurrency": "2"})
        }),
        raw("domain-int", "spec.domain", |o| {
            o["spec"]["domain"] = json!(42)
        }),
        raw("domain-null", "spec.domain", |o| {
            o["spec"]["domain"] = Value::Null
        }),
        raw("domain-missing", "spec.domain", |o| {
            remove(o, "domain");
        }),
        raw("primary-missing", "spec.primary", |o| {
            remove(o, "primary");
        }),
        raw("gatewayref-string", "spec.gatewayRef", |o| {
            o["spec"]["gatewayRef"] = json!("edge")
        }),
        raw("recipients-list", "spec.recipients", |o| {
            o["spec"]["recipients"] = json!(["alice@raw.example"])
        }),
        raw("inline-string", "spec.recipients.inline", |o| {
            o["spec"]["recipients"]["inline"] = json!("alice@raw.example")
        }),
        raw("inline-object", "spec.recipients.inline", |o| {
            o["spec"]["recipients"]["inline"] = json!({"alice": "raw.example"})
        }),
        raw("inline-ints", "spec.recipients.inline", |o| {
            o["spec"]["recipients"]["inline"] = json!([1, 2])
        }),
        raw("catchall-string", "spec.recipients.catchAll", |o| {
            o["spec"]["recipients"]["catchAll"] = json!("true")
        }),
        raw("requiretls-string", "spec.policy.requireTls", |o| {
            o["spec"]["policy"] = json!({"requireTls": "yes"})
        }),
        raw("rbls-string", "spec.policy.rbls", |o| {
            o["spec"]["policy"] = json!({"rbls": "zen.spamhaus.org"})
        }),
        raw("role-unknown", "spec.role", |o| {
            o["spec"]["role"] = json!("Tertiary")
        }),
        raw("tls-unknown", "spec.primary.tls", |o| {
            o["spec"]["primary"]["tls"] = json!("Maybe")
        }),
        raw("action-unknown", "spec.departure.action", |o| {
            o["spec"]["departure"] = json!({"action": "Delete"})
        }),
        // About 2.4 MB, more than etcd takes: refused either way, but clearly only by the
        // schema's maxItems.
        raw("inline-100001", "spec.recipients.inline", |o| {
            let many: Vec<String> = (0..100_001)
                .map(|i| format!("user{i}@raw.example"))
                .collect();
            o["spec"]["recipients"]["inline"] = json!(many)
        }),
        raw_gateway("gw-replicas-string", "spec.replicas", |o| {
            o["spec"]["replicas"] = json!("2")
        }),
        raw_gateway("gw-replicas-overflow", "spec.replicas", |o| {
            o["spec"]["replicas"] = json!(2_147_483_648_u64)
        }),
        raw_gateway("gw-mx-string", "spec.mxHostnames", |o| {
            o["spec"]["mxHostnames"] = json!("mx.example.net")
        }),
        raw_gateway("gw-service-type", "spec.service.type", |o| {
            o["spec"]["service"] = json!({"type": "External"})
        }),
        raw_gateway("gw-allowed-from", "spec.allowedDomains.from", |o| {
            o["spec"]["allowedDomains"] = json!({"from": "Everyone"})
        }),
    ]
}

fn remove(object: &mut Value, field: &str) {
    if let Some(spec) = object["spec"].as_object_mut() {
        spec.remove(field);
    }
}

/// Why a case does not count as refused, or `None` when it does.
type Verdict = Option<String>;

fn ready(conditions: &[Condition]) -> Option<&Condition> {
    find(conditions, READY)
}

/// Judges an object's conditions: refused means `Ready=False`, reason `InvalidSpec`, a
/// message that names `path`, and no `RelayConfigured` condition (nothing was touched).
fn judge(conditions: &[Condition], path: &str) -> Verdict {
    let Some(ready) = ready(conditions) else {
        return Some(format!("no Ready condition after {LIMIT:?}"));
    };
    if ready.status != ConditionStatus::False || ready.reason != "InvalidSpec" {
        return Some(format!(
            "Ready={:?} ({}): {}",
            ready.status, ready.reason, ready.message
        ));
    }
    if !ready.message.contains(path) {
        return Some(format!(
            "the message does not name {path}: {}",
            ready.message
        ));
    }
    if find(conditions, "RelayConfigured").is_some() {
        return Some("RelayConfigured was set".into());
    }
    None
}

/// Polls `conditions_of` (name → conditions) until every case in `names` has a `Ready`
/// condition or the deadline passes, and returns what it saw last.
async fn settle<F, Fut>(names: &[&str], mut conditions_of: F) -> BTreeMap<String, Vec<Condition>>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = BTreeMap<String, Vec<Condition>>>,
{
    let deadline = Instant::now() + LIMIT;
    loop {
        let seen = conditions_of().await;
        let settled = names
            .iter()
            .all(|name| seen.get(*name).is_some_and(|cs| ready(cs).is_some()));
        if settled || Instant::now() >= deadline {
            return seen;
        }
        tokio::time::sleep(POLL).await;
    }
}

async fn domain_conditions(ns: &TestNamespace) -> BTreeMap<String, Vec<Condition>> {
    let list = ns
        .api::<MailDomain>()
        .list(&ListParams::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default();
    list.into_iter()
        .map(|d| {
            let name = d.metadata.name.unwrap_or_default();
            (name, d.status.map(|s| s.conditions).unwrap_or_default())
        })
        .collect()
}

async fn gateway_conditions(ns: &TestNamespace) -> BTreeMap<String, Vec<Condition>> {
    let list = ns
        .api::<MailGateway>()
        .list(&ListParams::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default();
    list.into_iter()
        .map(|g| {
            let name = g.metadata.name.unwrap_or_default();
            (name, g.status.map(|s| s.conditions).unwrap_or_default())
        })
        .collect()
}

/// The API server's refusal of an apply, as its message; other errors end the test.
fn refusal<K>(result: Result<K, kube::Error>, name: &str) -> Option<String> {
    match result {
        Ok(_) => None,
        Err(kube::Error::Api(status)) => Some(format!("{} ({})", status.message, status.code)),
        Err(other) => panic!("applying {name}: {other}"),
    }
}

/// Applies every case; the ones the API server refused already, with its message.
async fn submit(ns: &TestNamespace, cases: &[Case], gateways: bool) -> BTreeMap<String, String> {
    let mut refused = BTreeMap::new();
    for case in cases {
        let mut object = if gateways {
            gateway(&case.name, json!({}))
        } else {
            domain(&case.name, &format!("{}.example", case.name), json!({}))
        };
        merge(&mut object["spec"], case.extra.clone());
        let result = if gateways {
            refusal(try_apply::<MailGateway>(ns, object).await, &case.name)
        } else {
            refusal(try_apply::<MailDomain>(ns, object).await, &case.name)
        };
        if let Some(message) = result {
            refused.insert(case.name.clone(), message);
        }
    }
    refused
}

/// One verdict per case: refused by the API server with a message naming the field, or
/// refused by the operator (`judge`); the detail is the message that refused it.
fn verdicts(
    cases: &[Case],
    by_server: &BTreeMap<String, String>,
    seen: &BTreeMap<String, Vec<Condition>>,
) -> Vec<(String, Verdict, String)> {
    cases
        .iter()
        .map(|case| {
            if let Some(message) = by_server.get(&case.name) {
                let verdict = (!message.contains(&case.path)).then(|| {
                    format!(
                        "the API server's refusal does not name {}: {message}",
                        case.path
                    )
                });
                return (case.name.clone(), verdict, format!("API server: {message}"));
            }
            let conditions = seen.get(&case.name).map(Vec::as_slice).unwrap_or_default();
            let message = ready(conditions)
                .map(|c| c.message.clone())
                .unwrap_or_default();
            // Thousands of problems, or a megabyte in one field: still one readable
            // condition.
            let verdict = judge(conditions, &case.path).or_else(|| {
                (message.len() > MAX_MESSAGE_BYTES)
                    .then(|| format!("a message of {} bytes", message.len()))
            });
            (case.name.clone(), verdict, message)
        })
        .collect()
}

/// Creates `case` through the raw API; `None` when the server refuses it as expected.
async fn try_raw(ns: &TestNamespace, case: &RawCase) -> Verdict {
    let (resource, mut object) = if case.gateway {
        (
            ApiResource::erase::<MailGateway>(&()),
            gateway(&format!("raw-{}", case.name), json!({})),
        )
    } else {
        (
            ApiResource::erase::<MailDomain>(&()),
            domain(&format!("raw-{}", case.name), "raw.example", json!({})),
        )
    };
    (case.mutate)(&mut object);
    let api: Api<DynamicObject> = Api::namespaced_with(ns.client.clone(), &ns.name, &resource);
    let object: DynamicObject = serde_json::from_value(object).expect("raw fixture");
    match api.create(&PostParams::default(), &object).await {
        Err(kube::Error::Api(status))
            if matches!(status.code, 400 | 422) && status.message.contains(case.expect) =>
        {
            None
        }
        Err(kube::Error::Api(status)) => Some(format!(
            "refused with {}, not naming {}: {}",
            status.code, case.expect, status.message
        )),
        Err(other) => Some(format!("failed without an API status: {other}")),
        Ok(stored) => {
            // The operator cannot decode such an object, and every watch event of it costs
            // it a backoff: it must not stay around.
            let name = stored.metadata.name.unwrap_or_default();
            let _ = api.delete(&name, &DeleteParams::default()).await;
            Some("stored by the API server".into())
        }
    }
}

fn shorten(message: &str) -> String {
    let one_line = message.replace('\n', "\\n");
    match one_line.char_indices().nth(200) {
        Some((at, _)) => format!("{}…", &one_line[..at]),
        None => one_line,
    }
}

/// Objects rendered for hostile ones: MailRelays in the namespace, and a hostile gateway's
/// ConfigMap or StatefulSet.
async fn rendered(ns: &TestNamespace, gateways: &[Case]) -> Vec<String> {
    let configmaps = ns.api::<ConfigMap>();
    let relays = ns
        .api::<MailRelay>()
        .list(&ListParams::default().labels("mx-operator.io/relay-for"))
        .await
        .expect("list MailRelays");
    let mut rendered: Vec<String> = relays
        .items
        .iter()
        .map(|c| c.metadata.name.clone().unwrap_or_default())
        .collect();
    let stateful_sets = ns.api::<StatefulSet>();
    for case in gateways {
        let config = format!("{}-config", case.name);
        if configmaps.get_opt(&config).await.ok().flatten().is_some() {
            rendered.push(config);
        }
        if stateful_sets
            .get_opt(&case.name)
            .await
            .ok()
            .flatten()
            .is_some()
        {
            rendered.push(format!("statefulset/{}", case.name));
        }
    }
    rendered
}

#[tokio::test]
async fn hostile_specs_are_refused_and_nothing_is_rendered() {
    let started = Instant::now();
    let (_, ns) = namespace_with_operator("hostile").await;
    apply::<MailGateway>(&ns, gateway("edge", json!({}))).await;

    let domains = domain_cases();
    let gateways = gateway_cases();
    let domains_by_server = submit(&ns, &domains, false).await;
    let gateways_by_server = submit(&ns, &gateways, true).await;
    let waiting = |cases: &[Case], by_server: &BTreeMap<String, String>| -> Vec<String> {
        cases
            .iter()
            .filter(|c| !by_server.contains_key(&c.name))
            .map(|c| c.name.clone())
            .collect()
    };
    let domain_names = waiting(&domains, &domains_by_server);
    let gateway_names = waiting(&gateways, &gateways_by_server);
    let domain_names: Vec<&str> = domain_names.iter().map(String::as_str).collect();
    let gateway_names: Vec<&str> = gateway_names.iter().map(String::as_str).collect();
    let seen_domains = settle(&domain_names, || domain_conditions(&ns)).await;
    let seen_gateways = settle(&gateway_names, || gateway_conditions(&ns)).await;

    let mut failures: Vec<String> = vec![];
    let mut refused = 0;
    let mut record = |table: &str, name: &str, verdict: Verdict, detail: &str| match verdict {
        None => {
            refused += 1;
            println!("refused  {table} {name}: {}", shorten(detail));
        }
        Some(why) => {
            println!("ACCEPTED {table} {name}: {}", shorten(&why));
            failures.push(format!("{table} {name}: {why}"));
        }
    };

    for (name, verdict, message) in verdicts(&domains, &domains_by_server, &seen_domains) {
        record("MailDomain", &name, verdict, &message);
    }
    for (name, verdict, message) in verdicts(&gateways, &gateways_by_server, &seen_gateways) {
        record("MailGateway", &name, verdict, &message);
    }
    let rendered = rendered(&ns, &gateways).await;

    let raws = raw_cases();
    for case in &raws {
        let verdict = try_raw(&ns, case).await;
        let detail = format!("the API server refused it, naming {}", case.expect);
        record("raw API", case.name, verdict, &detail);
    }

    // The operator keeps working: a valid domain next to all of them is relayed.
    apply::<MailDomain>(&ns, domain("after", "after.example", json!({}))).await;
    let domains_api = ns.api::<MailDomain>();
    let relayed = poll_every(POLL, LIMIT, "a valid domain to be relayed", || async {
        let after = domains_api.get("after").await.ok()?;
        let ready = after.condition(READY)?;
        (ready.status == ConditionStatus::True && ready.reason == "Relayed").then_some(())
    })
    .await;
    if let Err(timed_out) = relayed {
        let status = domains_api.get("after").await.ok().and_then(|d| d.status);
        failures.push(format!(
            "the operator stopped working: {timed_out}; its status: {status:?}"
        ));
    }

    let total = domains.len() + gateways.len() + raws.len();
    println!(
        "hostile specs: refused {refused} / rendered {} ({total} cases: {} MailDomain, {} MailGateway, {} raw API; {:?})",
        rendered.len(),
        domains.len(),
        gateways.len(),
        raws.len(),
        started.elapsed()
    );
    assert!(
        rendered.is_empty(),
        "rendered for hostile objects: {rendered:?}"
    );
    assert!(
        failures.is_empty(),
        "{} of {total} hostile cases were not refused:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(total >= 50, "only {total} cases");
}
