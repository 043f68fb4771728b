//! The API-server side of `mx-operator queue`: which gateway and replicas a domain's mail
//! is on, and `mx-operator agent-queue` run in each replica's agent container through
//! `pods/exec`, with the user's own credentials. There is no agent endpoint for this: who
//! may read or change a gateway's queue is who may exec into its pods.

use super::select::ReplicaReport;
use crate::api::MailDomain;
use crate::manifests::gateway::AGENT_CONTAINER;
use futures::future::join_all;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, AttachParams, ListParams};
use kube::client::UpgradeConnectionError;
use tokio::io::AsyncReadExt;

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("no MailDomain in namespace {namespace} has spec.domain {domain}")]
    NoDomain { domain: String, namespace: String },
    #[error("you may not {what} (namespace {namespace}): {message}")]
    Forbidden {
        what: String,
        namespace: String,
        message: String,
    },
    #[error("MailGateway {namespace}/{gateway} has no running replica")]
    NoReplicas { gateway: String, namespace: String },
    #[error("replica {pod}: {message}")]
    Replica { pod: String, message: String },
    #[error("{what}: {source}")]
    Kube {
        what: String,
        #[source]
        source: kube::Error,
    },
}

/// Where the mail asked about is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// The gateway's namespace, where its pods run.
    pub namespace: String,
    pub gateway: String,
    /// `None`: every message of the gateway.
    pub domain: Option<String>,
    /// The domain's `spec.delivery.hold`: a flush delivers nothing of it.
    pub held: bool,
}

fn failed(what: String, namespace: &str) -> impl FnOnce(kube::Error) -> QueueError {
    let namespace = namespace.to_string();
    move |source| match source {
        kube::Error::Api(status) if status.code == 403 => QueueError::Forbidden {
            what,
            namespace,
            message: status.message,
        },
        kube::Error::UpgradeConnection(UpgradeConnectionError::ProtocolSwitch(code))
            if code.as_u16() == 403 =>
        {
            QueueError::Forbidden {
                what,
                namespace,
                // Kubernetes 1.35 and later also check `create` for exec over WebSocket.
                message:
                    "the API server answered 403 Forbidden (pods/exec: grant both get and create)"
                        .into(),
            }
        }
        source => QueueError::Kube { what, source },
    }
}

/// The gateway of the MailDomain for `domain` in `namespace`, or the gateway named.
pub async fn target(
    client: &kube::Client,
    namespace: &str,
    domain: Option<&str>,
    gateway: Option<&str>,
) -> Result<Target, QueueError> {
    let Some(domain) = domain else {
        return Ok(Target {
            namespace: namespace.to_string(),
            gateway: gateway.unwrap_or_default().to_string(),
            domain: None,
            held: false,
        });
    };
    let domains: Api<MailDomain> = Api::namespaced(client.clone(), namespace);
    let listed = domains
        .list(&ListParams::default())
        .await
        .map_err(failed("list MailDomains".into(), namespace))?;
    let found = listed
        .items
        .into_iter()
        .find(|d| d.spec.domain.eq_ignore_ascii_case(domain))
        .ok_or_else(|| QueueError::NoDomain {
            domain: domain.to_string(),
            namespace: namespace.to_string(),
        })?;
    let reference = &found.spec.gateway_ref;
    Ok(Target {
        namespace: reference
            .namespace
            .clone()
            .unwrap_or_else(|| namespace.to_string()),
        gateway: reference.name.clone(),
        domain: Some(found.spec.domain.to_ascii_lowercase()),
        held: found.spec.delivery.as_ref().is_some_and(|d| d.hold),
    })
}

/// The gateway's running replicas, by name.
pub async fn replicas(client: &kube::Client, target: &Target) -> Result<Vec<String>, QueueError> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), &target.namespace);
    let selector = crate::manifests::gateway::pod_selector(&target.gateway);
    let listed = pods
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(failed(
            format!("list the pods of MailGateway {}", target.gateway),
            &target.namespace,
        ))?;
    let mut names: Vec<String> = listed
        .items
        .into_iter()
        .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
        .filter_map(|p| p.metadata.name)
        .collect();
    names.sort();
    if names.is_empty() {
        return Err(QueueError::NoReplicas {
            gateway: target.gateway.clone(),
            namespace: target.namespace.clone(),
        });
    }
    Ok(names)
}

/// `mx-operator agent-queue ARGS` in every replica at once; each replica's report, by name.
pub async fn on_replicas(
    client: &kube::Client,
    target: &Target,
    replicas: &[String],
    args: &[String],
) -> Result<Vec<(String, ReplicaReport)>, QueueError> {
    let runs = replicas
        .iter()
        .map(|pod| on_replica(client, &target.namespace, pod, args));
    let mut reports = vec![];
    for (pod, report) in replicas.iter().zip(join_all(runs).await) {
        reports.push((pod.clone(), report?));
    }
    Ok(reports)
}

async fn on_replica(
    client: &kube::Client,
    namespace: &str,
    pod: &str,
    args: &[String],
) -> Result<ReplicaReport, QueueError> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let command = ["mx-operator".to_string(), "agent-queue".to_string()]
        .into_iter()
        .chain(args.iter().cloned());
    let params = AttachParams::default()
        .container(AGENT_CONTAINER)
        .stdin(false)
        .stdout(true)
        .stderr(true);
    let mut process = pods
        .exec(pod, command.collect::<Vec<_>>(), &params)
        .await
        .map_err(failed(format!("run commands in pod {pod}"), namespace))?;
    let replica = |message: String| QueueError::Replica {
        pod: pod.to_string(),
        message,
    };
    let (mut stdout, mut stderr) = (process.stdout(), process.stderr());
    let status = process.take_status();
    let (mut out, mut err) = (vec![], vec![]);
    let (read_out, read_err, status) = tokio::join!(
        async {
            match stdout.as_mut() {
                Some(s) => s.read_to_end(&mut out).await.map(|_| ()),
                None => Ok(()),
            }
        },
        async {
            match stderr.as_mut() {
                Some(s) => s.read_to_end(&mut err).await.map(|_| ()),
                None => Ok(()),
            }
        },
        async {
            match status {
                Some(status) => status.await,
                None => None,
            }
        }
    );
    read_out
        .and(read_err)
        .map_err(|e| replica(format!("reading its answer: {e}")))?;
    let _ = process.join().await;
    let succeeded = status
        .as_ref()
        .is_none_or(|s| s.status.as_deref() == Some("Success"));
    if !succeeded {
        let said = String::from_utf8_lossy(&err).trim().to_string();
        let why = status.and_then(|s| s.message).unwrap_or_default();
        return Err(replica(if said.is_empty() { why } else { said }));
    }
    serde_json::from_slice(&out).map_err(|e| {
        replica(format!(
            "its answer is not a queue report ({e}): {}",
            String::from_utf8_lossy(&err).trim()
        ))
    })
}
