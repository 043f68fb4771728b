//! DNSProvider status: whether its RFC 2136 server answers and lets its TSIG key update
//! the zone, checked once per provider (at every resync, sooner after a failure) rather
//! than left for each of its domains to find out.

use super::context::{Context, Error};
use super::maildomain::dns::server;
use super::write::{namespace_of, write_status};
use crate::api::DNSProvider;
use crate::api::conditions::{READY, Verdict};
use crate::api::dnsprovider::Rfc2136;
use crate::net::rfc2136::DnsError;
use kube::ResourceExt;
use kube::runtime::controller::Action;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How soon a provider is checked again after a failed check.
const RECHECK_FAILED: Duration = Duration::from_secs(10);
const RETRY: Duration = Duration::from_secs(30);

pub async fn reconcile(provider: Arc<DNSProvider>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let result = reconcile_inner(&provider, &ctx).await;
    ctx.metrics
        .observe_reconcile("DNSProvider", started.elapsed(), result.as_ref().err());
    result
}

pub fn error_policy(provider: Arc<DNSProvider>, error: &Error, _ctx: Arc<Context>) -> Action {
    tracing::warn!(dnsprovider = %provider.name_any(), %error, "reconcile failed; retrying");
    Action::requeue(RETRY)
}

#[tracing::instrument(skip_all, fields(dnsprovider = %provider.name_any(), namespace = provider.namespace().unwrap_or_default()))]
async fn reconcile_inner(provider: &DNSProvider, ctx: &Context) -> Result<Action, Error> {
    if provider.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let namespace = namespace_of(provider)?;
    let verdict = check(provider, ctx, &namespace).await;
    let again = if verdict.status {
        ctx.settings.resync
    } else {
        RECHECK_FAILED
    };
    write_status(
        provider,
        provider.status.as_ref(),
        ctx,
        &[verdict.on(READY)],
        |_| {},
    )
    .await?;
    Ok(Action::requeue(again))
}

async fn check(provider: &DNSProvider, ctx: &Context, namespace: &str) -> Verdict {
    if let Err(problems) = provider.spec.validate() {
        return Verdict::failed("InvalidSpec", problems.to_string());
    }
    let Some(rfc2136) = &provider.spec.rfc2136 else {
        return Verdict::new(
            true,
            "ExternalDNS",
            "MX records are written as DNSEndpoint objects for external-dns to publish; nothing to check here",
        );
    };
    let server = match server(ctx, namespace, rfc2136).await {
        Ok(server) => server,
        Err(problem) => return problem.verdict,
    };
    let zone = rfc2136.zone.as_deref();
    let answer = async {
        let mut session = ctx.network.updater.connect(&server).await?;
        match zone {
            // A zone the server does not serve gets an unsigned refusal, which reads like a
            // wrong key: ask for its SOA first.
            Some(zone) => match session.find_zone(zone).await? {
                found if found.eq_ignore_ascii_case(zone.trim_end_matches('.')) => {
                    session.check_update(zone).await
                }
                found => Err(DnsError::ZoneNotFound(format!(
                    "the closest zone it serves is {found}"
                ))),
            },
            // No zone to ask for: only whether the server answers.
            None => session.mx_records(CHECK_NAME).await.map(|_| ()),
        }
    }
    .await;
    verdict(rfc2136, &server.address.to_string(), answer)
}

/// Asked when no zone is set: a name no server is authoritative for.
const CHECK_NAME: &str = "mx-operator-check.invalid";

/// The `Ready` verdict of a provider from the answer to its check: a signed update that
/// changes nothing when a zone is set, else a query. Pure.
fn verdict(rfc2136: &Rfc2136, address: &str, answer: Result<(), DnsError>) -> Verdict {
    let at = format!("{} ({address})", rfc2136.server);
    let key = &rfc2136.tsig.key_name;
    match (&rfc2136.zone, answer) {
        (Some(zone), Ok(())) => Verdict::new(
            true,
            "Verified",
            format!("{at} accepts updates of zone {zone} signed with the TSIG key {key}"),
        ),
        // Servers answer queries whatever key signs them: the key is first tried by a
        // domain's update.
        (None, Ok(()) | Err(DnsError::Refused(_) | DnsError::NotAuthoritative(_))) => Verdict::new(
            true,
            "Reachable",
            format!(
                "{at} answers; without spec.rfc2136.zone the TSIG key {key} is first tried when a domain's record is published"
            ),
        ),
        (Some(zone), Err(DnsError::NotAuthoritative(why) | DnsError::ZoneNotFound(why))) => {
            Verdict::failed(
                "ZoneNotServed",
                format!("{at} does not serve zone {zone}: {why}"),
            )
        }
        (_, Err(error)) => Verdict::failed(error.reason(), format!("{at}: {error}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::fixtures;
    use serde_json::json;

    fn rfc2136(zone: Option<&str>) -> Rfc2136 {
        let mut spec = json!({"server": "ns1.example.net", "tsig": {"keyName": "mx-operator"}});
        if let Some(zone) = zone {
            spec["zone"] = json!(zone);
        }
        fixtures::provider(json!({"spec": {"rfc2136": spec}}))
            .spec
            .rfc2136
            .unwrap()
    }

    #[test]
    fn the_check_says_whether_server_key_and_zone_work() {
        let cases = [
            (Some("example.com"), Ok(()), true, "Verified"),
            (None, Ok(()), true, "Reachable"),
            // Without a zone the check name is refused: the server answers.
            (
                None,
                Err(DnsError::Refused("REFUSED".into())),
                true,
                "Reachable",
            ),
            (
                Some("example.com"),
                Err(DnsError::NotAuthoritative("NOTAUTH".into())),
                false,
                "ZoneNotServed",
            ),
            (
                Some("example.com"),
                Err(DnsError::Refused("REFUSED".into())),
                false,
                "Refused",
            ),
            (
                Some("example.com"),
                Err(DnsError::AuthFailed("BADKEY".into())),
                false,
                "AuthFailed",
            ),
            (
                None,
                Err(DnsError::ServerUnreachable("refused".into())),
                false,
                "ServerUnreachable",
            ),
            (None, Err(DnsError::Timeout("5s".into())), false, "Timeout"),
            (
                Some("example.com"),
                Err(DnsError::ZoneNotFound("closest is com".into())),
                false,
                "ZoneNotServed",
            ),
        ];
        for (zone, answer, ok, reason) in cases {
            let verdict = verdict(&rfc2136(zone), "192.0.2.53:53", answer);
            assert_eq!((verdict.status, verdict.reason), (ok, reason), "{zone:?}");
            assert!(
                verdict
                    .message
                    .starts_with("ns1.example.net (192.0.2.53:53)")
            );
        }
    }
}
