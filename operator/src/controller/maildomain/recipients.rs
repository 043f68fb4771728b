//! A domain's recipient list: the inline addresses merged with the referenced lists and the
//! directory's list in force, and whether the oldest of them is past `recipients.maxAge`.
//! Pure.

use super::super::sources::{ACCEPT_SHRINK_ANNOTATION, Held, SourceState, not_opted_in};
use super::fetch::{ListSource, ListText};
use crate::api::MailDomain;
use crate::api::conditions::Verdict;
use crate::api::validate::{normalize_address, parse_duration};
use crate::recipients::{RecipientSet, Utf16, parse_list};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::Timestamp;
use std::collections::BTreeSet;
use std::time::Duration;

/// Set on a referenced recipient list by whatever keeps it up to date; `maxAge` is
/// measured from it (otherwise from the object's last write).
pub const RECIPIENTS_UPDATED_ANNOTATION: &str = "mx-operator.io/recipients-updated-at";

#[derive(Clone, Debug, PartialEq)]
pub struct Recipients {
    pub addresses: RecipientSet,
    /// Where they came from, for status: "2 inline, 3 from ConfigMap users".
    pub described: String,
    /// Set to the age when a referenced list is older than `maxAge`.
    pub stale: Option<String>,
    /// Why no list of a source is in force yet: the gateway answers 4xx for the domain.
    pub unsynced: Option<Verdict>,
    /// A source failing, or a list held back, while its list in force keeps serving.
    pub problem: Option<Verdict>,
    pub becomes_stale_in: Option<Duration>,
    /// When the next synced source is asked again.
    pub refresh_in: Option<Duration>,
}

/// Why no list is rendered: the gateway keeps the one it has.
#[derive(Clone, Debug, PartialEq)]
pub struct Unmerged {
    pub problem: Verdict,
    /// When the list the gateway keeps passes `maxAge` (it then answers 4xx).
    pub stale_in: Option<Duration>,
}

impl From<Verdict> for Unmerged {
    fn from(problem: Verdict) -> Self {
        Self {
            problem,
            stale_in: None,
        }
    }
}

/// Merges the inline list with the referenced ones. `Err` is a problem the user can fix:
/// a missing list or key, or an invalid line (the whole list is refused then); or a synced
/// source without a list since the operator started, while no list is past `maxAge`.
pub fn merge(
    domain: &MailDomain,
    normalized: &str,
    namespace: &str,
    lists: &[ListSource],
    synced: &[SourceState],
    now: Timestamp,
) -> Result<Recipients, Unmerged> {
    let spec = &domain.spec.recipients;
    let mut addresses: BTreeSet<String> = spec
        .inline
        .iter()
        .filter_map(|a| normalize_address(a, normalized).ok())
        .collect();
    // The synced lists are large: read where they are held, not copied into `addresses`.
    let mut synced_lists = Vec::with_capacity(synced.len());
    let mut sources = vec![format!("{} inline", spec.inline.len())];
    let max_age = spec.max_age.as_deref().and_then(|a| parse_duration(a).ok());
    let mut oldest: Option<(Duration, String)> = None;
    for list in lists {
        let (kind, name, key) = (list.kind, &list.reference.name, &list.reference.key);
        let Some((metadata, text)) = &list.found else {
            return Err(Verdict::failed(
                "RecipientSourceMissing",
                format!("{kind} {namespace}/{name} does not exist"),
            )
            .into());
        };
        let label = format!("{kind} {namespace}/{name} key {key}");
        let text = match text {
            ListText::Text(text) => text,
            ListText::Unreadable => {
                return Err(Verdict::failed(
                    "RecipientSourceMissing",
                    format!(
                        "{kind} {namespace}/{name} has no key {key:?} (or it is not UTF-8 text)"
                    ),
                )
                .into());
            }
            ListText::NotOptedIn => {
                return Err(
                    Verdict::failed("SecretNotAllowed", not_opted_in(namespace, name)).into(),
                );
            }
            ListText::Utf16 => {
                return Err(
                    Verdict::failed("InvalidRecipients", format!("{label}: {Utf16}")).into(),
                );
            }
        };
        match parse_list(&label, text, normalized) {
            Ok(list) => {
                sources.push(format!("{} from {kind} {name}", list.len()));
                addresses.extend(list);
            }
            Err(invalid) => {
                return Err(Verdict::failed("InvalidRecipients", invalid.to_string()).into());
            }
        }
        if let Some(age) = age_of(metadata, now)
            && oldest.as_ref().is_none_or(|(o, _)| age > *o)
        {
            oldest = Some((age, label));
        }
    }
    // A source that never gave a list: the gateway does not know the domain's users, and
    // answers 4xx for all of them. One whose list an earlier operator synced: nothing is
    // rendered and the gateway keeps the list it has, unless one of the domain's lists is
    // past maxAge: then the whole domain answers 4xx.
    let mut unsynced: Option<Verdict> = None;
    let mut kept: Option<Verdict> = None;
    // A source failing, or a list held back, while a list is in force: mail flows.
    let mut problem: Option<Verdict> = None;
    for source in synced {
        let what = &source.described;
        let Some(list) = &source.in_force else {
            let (reason, why) = match &source.error {
                Some(error) => (error.reason(), error.to_string()),
                None => (
                    "RecipientsNotSynced",
                    "the first sync is running".to_string(),
                ),
            };
            let since = format!(
                "no sync of {what} has succeeded since the operator started or the source changed"
            );
            match &source.earlier {
                None => {
                    sources.push(format!("no list yet from {what} ({reason})"));
                    let verdict = match &source.held {
                        Some(held) => shrink_held(what, held),
                        None => Verdict::failed(reason, format!("{since}: {why}")),
                    };
                    unsynced.get_or_insert(verdict);
                }
                Some(earlier) => {
                    // The gateway holds the list an earlier operator synced: maxAge counts
                    // from it.
                    let age =
                        Duration::try_from(now.duration_since(earlier.at)).unwrap_or_default();
                    if oldest.as_ref().is_none_or(|(o, _)| age > *o) {
                        oldest = Some((age, what.clone()));
                    }
                    sources.push(format!("the list of {what} synced at {}", earlier.at));
                    let verdict = match &source.held {
                        Some(held) => shrink_held(what, held),
                        None => Verdict::failed(
                            reason,
                            format!("{since} ({why}); the last success was at {}", earlier.at),
                        ),
                    };
                    kept.get_or_insert(verdict);
                }
            }
            continue;
        };
        let mut described = format!("{} from {what}", list.addresses.len());
        // The last attempt's failure first: it is what is wrong now.
        if let Some(error) = &source.error {
            described.push_str(&format!(
                " (synced at {}; the last sync failed: {})",
                list.at,
                error.reason()
            ));
            problem.get_or_insert(Verdict::failed(
                error.reason(),
                format!(
                    "the last sync of {what} failed: {error}; its list of {} synced at {} keeps serving",
                    list.addresses.len(),
                    list.at
                ),
            ));
        } else if let Some(held) = &source.held {
            problem.get_or_insert(shrink_held(what, held));
        }
        sources.push(described);
        synced_lists.push(list.addresses.clone());
        let age = Duration::try_from(now.duration_since(list.at)).unwrap_or_default();
        if oldest.as_ref().is_none_or(|(o, _)| age > *o) {
            oldest = Some((age, what.clone()));
        }
    }
    let (stale, becomes_stale_in) = match (max_age, &oldest) {
        (Some(max), Some((age, label))) if *age > max => (
            Some(format!("{label}: last updated {}s ago", age.as_secs())),
            None,
        ),
        (Some(max), Some((age, _))) => (None, Some(max - *age + Duration::from_secs(1))),
        _ => (None, None),
    };
    if stale.is_none()
        && unsynced.is_none()
        && let Some(problem) = kept
    {
        return Err(Unmerged {
            problem,
            stale_in: becomes_stale_in,
        });
    }
    if spec.catch_all {
        sources.push("catch-all".into());
    }
    Ok(Recipients {
        addresses: RecipientSet::merged(addresses, synced_lists),
        described: sources.join(", "),
        stale,
        unsynced,
        problem,
        becomes_stale_in,
        refresh_in: synced.iter().map(|s| s.next_in).min(),
    })
}

/// `RecipientsSynced=False ShrinkHeld`: by how much, from where, and how to apply it.
fn shrink_held(what: &str, held: &Held) -> Verdict {
    if held.from == 0 {
        return Verdict::failed(
            "ShrinkHeld",
            format!(
                "{what} gave no address of the domain at its first sync ({}): held, the gateway answers 4xx until a list is in force; if the domain really has no users, annotate the MailDomain {ACCEPT_SHRINK_ANNOTATION}={}",
                held.list.at, held.id
            ),
        );
    }
    let to = held.list.addresses.len();
    let removed = held.from.saturating_sub(to);
    let percent = (removed * 100).checked_div(held.from).unwrap_or(100);
    Verdict::failed(
        "ShrinkHeld",
        format!(
            "{what} shrank from {} to {to} addresses (-{percent} %) at {}, more than recipients.maxShrink allows: held, the list in force keeps serving; to apply it, annotate the MailDomain {ACCEPT_SHRINK_ANNOTATION}={}, or raise recipients.maxShrink",
            held.from, held.list.at, held.id
        ),
    )
}

/// How long ago a referenced list was last updated: its annotation when the tool that
/// keeps it sets one, otherwise the last write recorded in its managed fields.
fn age_of(metadata: &ObjectMeta, now: Timestamp) -> Option<Duration> {
    let annotated = metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(RECIPIENTS_UPDATED_ANNOTATION))
        .and_then(|t| t.parse::<Timestamp>().ok());
    let written = metadata
        .managed_fields
        .iter()
        .flatten()
        .filter_map(|f| f.time.as_ref().map(|t| t.0))
        .chain(metadata.creation_timestamp.as_ref().map(|t| t.0))
        .max();
    let updated = annotated.or(written)?;
    let age = now.duration_since(updated);
    Some(Duration::from_secs(age.as_secs().max(0) as u64))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::fixtures;
    use serde_json::json;

    fn secret(text: ListText) -> ListSource {
        ListSource {
            kind: "Secret",
            reference: crate::api::KeyRef {
                name: "vip".into(),
                key: "list".into(),
            },
            found: Some((ObjectMeta::default(), text)),
        }
    }

    fn refused(text: ListText) -> Verdict {
        let domain = fixtures::domain(json!({"spec": {"recipients": {
            "secretRef": {"name": "vip", "key": "list"}}}}));
        let merged = merge(
            &domain,
            "example.com",
            "tenant",
            &[secret(text)],
            &[],
            Timestamp::UNIX_EPOCH,
        );
        match merged {
            Err(unmerged) => unmerged.problem,
            Ok(merged) => panic!("merged: {merged:?}"),
        }
    }

    #[test]
    fn a_secret_list_is_refused_by_line_never_by_content() {
        let text = "alice@example.com\nTOPSECRET-VALUE-1 hunter2\n\nTOPSECRET-VALUE-2 hunter2\n";
        let problem = refused(ListText::Text(text.into()));
        assert_eq!(problem.reason, "InvalidRecipients");
        assert_eq!(
            problem.message,
            "Secret tenant/vip key list has 2 invalid line(s): line 2: not an address (contains \
             whitespace); line 4: not an address (contains whitespace)"
        );
    }

    #[test]
    fn a_utf16_secret_says_so_and_other_bytes_as_before() {
        let problem = refused(ListText::Utf16);
        assert_eq!(problem.reason, "InvalidRecipients");
        assert_eq!(
            problem.message,
            "Secret tenant/vip key list: the list is UTF-16 (a PowerShell export?); save it as \
             UTF-8"
        );
        let problem = refused(ListText::Unreadable);
        assert_eq!(problem.reason, "RecipientSourceMissing");
        assert!(problem.message.contains("not UTF-8 text"), "{problem:?}");
    }

    #[test]
    fn a_secret_not_labelled_for_recipient_sources_is_refused_by_name() {
        let problem = refused(ListText::NotOptedIn);
        assert_eq!(problem.reason, "SecretNotAllowed");
        assert!(
            problem
                .message
                .contains("mx-operator.io/recipient-source=true"),
            "{problem:?}"
        );
    }
}
