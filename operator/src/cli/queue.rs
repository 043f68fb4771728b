//! `mx-operator queue`: a domain's or gateway's queued mail on every replica, listed,
//! flushed or deleted with the user's kubeconfig; and `mx-operator agent-queue`, what it
//! runs in each replica.

use super::error::CliError;
use crate::queue::remote::{Target, on_replicas, replicas, target};
use crate::queue::replica::{Action, act};
use crate::queue::select::ReplicaReport;
use crate::queue::table::{json, table};
use clap::Subcommand;
use std::path::PathBuf;

/// Flags of `mx-operator queue`.
#[derive(Debug, clap::Args)]
pub struct QueueArgs {
    #[command(subcommand)]
    action: QueueAction,
}

#[derive(Debug, Subcommand)]
enum QueueAction {
    /// The queued messages (ID, queue, age, size, recipients, last deferral reason; never
    /// the content) of every replica.
    List {
        #[command(flatten)]
        scope: Scope,
        /// table or json.
        #[arg(short = 'o', long, value_enum, default_value = "table")]
        output: Output,
    },
    /// Try the deferred messages now, on every replica (`postqueue -i`).
    Flush {
        #[command(flatten)]
        scope: Scope,
    },
    /// Remove messages from the queues, undelivered (`postsuper -d`): the domain's, or the
    /// IDs given. A message that also has recipients of other domains is kept.
    Delete {
        #[command(flatten)]
        scope: Scope,
        /// Only these queue IDs (repeatable).
        #[arg(long = "id")]
        ids: Vec<String>,
    },
}

#[derive(Debug, clap::Args)]
struct Scope {
    /// The mail of this domain: the MailDomain with this spec.domain, on its gateway.
    #[arg(long, required_unless_present = "gateway")]
    domain: Option<String>,
    /// The mail of every domain of this MailGateway (in --namespace).
    #[arg(long, conflicts_with = "domain")]
    gateway: Option<String>,
    /// Namespace of the MailDomain (or MailGateway); the kubeconfig's by default.
    #[arg(short = 'n', long)]
    namespace: Option<String>,
    /// Kubeconfig context; the current one by default.
    #[arg(long)]
    context: Option<String>,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum Output {
    Table,
    Json,
}

/// Flags of `mx-operator agent-queue`.
#[derive(Debug, clap::Args)]
pub struct AgentQueueArgs {
    #[arg(value_enum)]
    action: ReplicaAction,
    /// Only this domain's messages.
    #[arg(long)]
    domain: Option<String>,
    /// For delete: only these queue IDs (repeatable).
    #[arg(long = "id")]
    ids: Vec<String>,
    /// Postfix configuration folder (`postqueue -c`).
    #[arg(long, default_value = crate::manifests::gateway::POSTFIX_CONFIG_DIR)]
    config_dir: PathBuf,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum ReplicaAction {
    List,
    Flush,
    Delete,
}

pub async fn agent_queue(args: AgentQueueArgs) -> Result<(), CliError> {
    let action = match args.action {
        ReplicaAction::List => Action::List,
        ReplicaAction::Flush => Action::Flush,
        ReplicaAction::Delete => Action::Delete { ids: args.ids },
    };
    let postfix = crate::agent::Postfix::new(args.config_dir);
    let report = act(&postfix, args.domain.as_deref(), &action).await?;
    println!("{}", serde_json::to_string(&report).unwrap_or_default());
    Ok(())
}

pub async fn queue(args: QueueArgs) -> Result<(), CliError> {
    let (scope, action, ids) = match &args.action {
        QueueAction::List { scope, .. } => (scope, ReplicaAction::List, &[][..]),
        QueueAction::Flush { scope } => (scope, ReplicaAction::Flush, &[][..]),
        QueueAction::Delete { scope, ids } => (scope, ReplicaAction::Delete, ids.as_slice()),
    };
    if matches!(action, ReplicaAction::Delete) && scope.domain.is_none() && ids.is_empty() {
        return Err(CliError::Usage(
            "delete takes --domain, or --id for the messages to remove".into(),
        ));
    }
    let config = match &scope.context {
        Some(context) => {
            let options = kube::config::KubeConfigOptions {
                context: Some(context.clone()),
                ..Default::default()
            };
            kube::Config::from_kubeconfig(&options).await?
        }
        None => kube::Config::infer()
            .await
            .map_err(kube::Error::InferConfig)?,
    };
    let namespace = scope
        .namespace
        .clone()
        .unwrap_or_else(|| config.default_namespace.clone());
    let client = kube::Client::try_from(config)?;
    let target = target(
        &client,
        &namespace,
        scope.domain.as_deref(),
        scope.gateway.as_deref(),
    )
    .await?;
    let pods = replicas(&client, &target).await?;
    // The name agent-queue parses the action by.
    let verb = clap::ValueEnum::to_possible_value(&action)
        .map(|value| value.get_name().to_string())
        .unwrap_or_default();
    let mut remote = vec![verb];
    if let Some(domain) = &target.domain {
        remote.extend(["--domain".to_string(), domain.clone()]);
    }
    for id in ids {
        remote.extend(["--id".to_string(), id.clone()]);
    }
    let reports = on_replicas(&client, &target, &pods, &remote).await?;
    match &args.action {
        QueueAction::List { output, .. } => match output {
            Output::Table => {
                let now = k8s_openapi::jiff::Timestamp::now().as_second();
                print!(
                    "{}",
                    table(&reports, u64::try_from(now).unwrap_or_default())
                );
            }
            Output::Json => println!("{:#}", json(&reports)),
        },
        _ => print!("{}", done(&target, &reports, ids)?),
    }
    Ok(())
}

/// What a flush or delete did, per replica; an error when IDs asked for were found on no
/// replica.
fn done(
    target: &Target,
    reports: &[(String, ReplicaReport)],
    ids: &[String],
) -> Result<String, CliError> {
    let mut text = String::new();
    for (replica, report) in reports {
        if !report.flushed.is_empty() {
            text.push_str(&format!(
                "{replica}: {} deferred message(s) tried now: {}\n",
                report.flushed.len(),
                report.flushed.join(" ")
            ));
        }
        if !report.deleted.is_empty() {
            text.push_str(&format!(
                "{replica}: {} message(s) deleted: {}\n",
                report.deleted.len(),
                report.deleted.join(" ")
            ));
        }
        if !report.shared.is_empty() {
            text.push_str(&format!(
                "{replica}: kept {}: they also have recipients of other domains\n",
                report.shared.join(" ")
            ));
        }
        if report.flushed.is_empty() && report.deleted.is_empty() && report.shared.is_empty() {
            text.push_str(&format!("{replica}: nothing to do\n"));
        }
    }
    if target.held && reports.iter().any(|(_, r)| !r.flushed.is_empty()) {
        text.push_str(
            "note: the domain's spec.delivery.hold is true: its mail is deferred again until it is released\n",
        );
    }
    let found = |id: &String| {
        reports.iter().any(|(_, r)| {
            r.deleted.contains(id)
                || r.shared.contains(id)
                || r.messages.iter().any(|m| &m.id == id)
        })
    };
    let missing: Vec<&String> = ids.iter().filter(|id| !found(id)).collect();
    if !missing.is_empty() {
        print!("{text}");
        return Err(CliError::Usage(format!(
            "no replica holds {} for this domain",
            missing
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(" ")
        )));
    }
    Ok(text)
}
