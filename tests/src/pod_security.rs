//! The Pod Security Standards (kubernetes.io/docs/concepts/security/pod-security-standards,
//! the `latest` version of both profiles), evaluated on a pod spec the way the
//! PodSecurity admission plugin of Kubernetes 1.25+ evaluates it: the level it meets,
//! and what keeps it from the next. The test node (1.20) has no such plugin.

use k8s_openapi::api::core::v1::{Container, PodSpec, SeccompProfile, SecurityContext};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Privileged,
    Baseline,
    Restricted,
}

/// Capabilities `baseline` lets a container add.
const BASELINE_CAPABILITIES: &[&str] = &[
    "AUDIT_WRITE",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "MKNOD",
    "NET_BIND_SERVICE",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
];

/// Sysctls `baseline` allows.
const SAFE_SYSCTLS: &[&str] = &[
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
];

/// The highest level `pod` meets, and why it does not meet the next one up.
pub fn level(pod: &PodSpec) -> (Level, Vec<String>) {
    let baseline = baseline_violations(pod);
    if !baseline.is_empty() {
        return (Level::Privileged, baseline);
    }
    let restricted = restricted_violations(pod);
    if restricted.is_empty() {
        (Level::Restricted, vec![])
    } else {
        (Level::Baseline, restricted)
    }
}

fn containers(pod: &PodSpec) -> impl Iterator<Item = &Container> {
    pod.containers
        .iter()
        .chain(pod.init_containers.iter().flatten())
}

fn context(container: &Container) -> SecurityContext {
    container.security_context.clone().unwrap_or_default()
}

fn baseline_violations(pod: &PodSpec) -> Vec<String> {
    let mut found = Vec::new();
    for (flag, name) in [
        (pod.host_network, "hostNetwork"),
        (pod.host_pid, "hostPID"),
        (pod.host_ipc, "hostIPC"),
    ] {
        if flag == Some(true) {
            found.push(format!("{name} is true"));
        }
    }
    let pod_context = pod.security_context.clone().unwrap_or_default();
    if pod_context
        .windows_options
        .as_ref()
        .and_then(|w| w.host_process)
        == Some(true)
    {
        found.push("a Windows host process".into());
    }
    if let Some(options) = &pod_context.se_linux_options {
        found.extend(selinux_violation(options.type_.as_deref(), "the pod"));
    }
    if let Some(profile) = &pod_context.seccomp_profile
        && profile.type_ == "Unconfined"
    {
        found.push("the pod's seccomp profile is Unconfined".into());
    }
    for sysctl in pod_context.sysctls.iter().flatten() {
        if !SAFE_SYSCTLS.contains(&sysctl.name.as_str()) {
            found.push(format!("sysctl {} is not a safe one", sysctl.name));
        }
    }
    for volume in pod.volumes.iter().flatten() {
        if volume.host_path.is_some() {
            found.push(format!("volume {} is a hostPath", volume.name));
        }
    }
    for container in containers(pod) {
        let name = &container.name;
        let security = context(container);
        if security.privileged == Some(true) {
            found.push(format!("container {name} is privileged"));
        }
        for added in security
            .capabilities
            .as_ref()
            .and_then(|c| c.add.as_ref())
            .into_iter()
            .flatten()
        {
            if !BASELINE_CAPABILITIES.contains(&added.as_str()) {
                found.push(format!("container {name} adds {added}"));
            }
        }
        for port in container.ports.iter().flatten() {
            if port.host_port.is_some_and(|p| p != 0) {
                found.push(format!("container {name} has a hostPort"));
            }
        }
        if security
            .proc_mount
            .as_deref()
            .is_some_and(|m| m != "Default")
        {
            found.push(format!("container {name} unmasks /proc"));
        }
        if let Some(options) = &security.se_linux_options {
            found.extend(selinux_violation(
                options.type_.as_deref(),
                &format!("container {name}"),
            ));
        }
        if security
            .seccomp_profile
            .as_ref()
            .is_some_and(|p| p.type_ == "Unconfined")
        {
            found.push(format!("container {name}'s seccomp profile is Unconfined"));
        }
        if security
            .windows_options
            .as_ref()
            .and_then(|w| w.host_process)
            == Some(true)
        {
            found.push(format!("container {name} is a Windows host process"));
        }
    }
    found
}

fn selinux_violation(type_: Option<&str>, whose: &str) -> Option<String> {
    match type_ {
        None | Some("" | "container_t" | "container_init_t" | "container_kvm_t") => None,
        Some(other) => Some(format!("{whose} sets SELinux type {other}")),
    }
}

fn restricted_violations(pod: &PodSpec) -> Vec<String> {
    let mut found = Vec::new();
    for volume in pod.volumes.iter().flatten() {
        let allowed = volume.config_map.is_some()
            || volume.csi.is_some()
            || volume.downward_api.is_some()
            || volume.empty_dir.is_some()
            || volume.ephemeral.is_some()
            || volume.persistent_volume_claim.is_some()
            || volume.projected.is_some()
            || volume.secret.is_some();
        if !allowed {
            found.push(format!(
                "volume {} is of a type restricted does not allow",
                volume.name
            ));
        }
    }
    let pod_context = pod.security_context.clone().unwrap_or_default();
    let seccomp_ok = |profile: &Option<SeccompProfile>| {
        profile
            .as_ref()
            .is_some_and(|p| p.type_ == "RuntimeDefault" || p.type_ == "Localhost")
    };
    for container in containers(pod) {
        let name = &container.name;
        let security = context(container);
        if security.allow_privilege_escalation != Some(false) {
            found.push(format!("container {name} may escalate privileges"));
        }
        let non_root = security
            .run_as_non_root
            .or(pod_context.run_as_non_root)
            .unwrap_or(false);
        if !non_root {
            found.push(format!(
                "container {name} may run as root (runAsNonRoot is not true)"
            ));
        }
        if security.run_as_user.or(pod_context.run_as_user) == Some(0) {
            found.push(format!("container {name} runs as UID 0"));
        }
        if !seccomp_ok(&security.seccomp_profile) && !seccomp_ok(&pod_context.seccomp_profile) {
            found.push(format!(
                "container {name} has no RuntimeDefault or Localhost seccomp profile"
            ));
        }
        let capabilities = security.capabilities.unwrap_or_default();
        if !capabilities
            .drop
            .iter()
            .flatten()
            .any(|dropped| dropped == "ALL")
        {
            found.push(format!("container {name} does not drop ALL capabilities"));
        }
        for added in capabilities.add.iter().flatten() {
            if added != "NET_BIND_SERVICE" {
                found.push(format!("container {name} adds {added}"));
            }
        }
    }
    found
}
