//! The gateway image cannot be built here (no container engine), so this checks that what
//! its Dockerfile and entrypoint name exists: Debian packages, files of this repository, the
//! binary the build stage produces, and the paths the entrypoint runs.

use std::process::Command;

use mx_operator_tests::repository;

/// Checks every `COPY` of a Dockerfile: a binary from the build stage must be one the
/// crate defines and the stage builds, a file of this repository must exist. Returns how
/// many were checked.
fn copied_files_exist(dockerfile: &str) -> usize {
    let mut checked = 0;
    for line in dockerfile.lines().filter(|l| l.starts_with("COPY ")) {
        let words: Vec<&str> = line.split_whitespace().collect();
        if let Some(from_build) = words.iter().find(|w| w.starts_with("/src/target/release/")) {
            let binary = from_build.trim_start_matches("/src/target/release/");
            let manifest =
                std::fs::read_to_string(repository().join("operator/Cargo.toml")).unwrap();
            assert!(
                manifest.contains(&format!("name = \"{binary}\"")),
                "no binary {binary}"
            );
            assert!(dockerfile.contains(&format!("--bin {binary}")));
            checked += 1;
        } else if words.len() == 3 && words[1] != "." {
            assert!(
                repository().join(words[1]).exists(),
                "{} does not exist",
                words[1]
            );
            checked += 1;
        }
    }
    checked
}

#[test]
fn operator_image_is_distroless_and_runs_as_the_chart_expects() {
    let dockerfile =
        std::fs::read_to_string(repository().join("deploy/operator/Dockerfile")).unwrap();
    assert_eq!(copied_files_exist(&dockerfile), 1, "the binary is copied");
    let runtime = dockerfile
        .lines()
        .rfind(|l| l.starts_with("FROM "))
        .unwrap();
    assert!(
        runtime.contains("distroless") && runtime.ends_with(":nonroot"),
        "{runtime}"
    );
    assert!(dockerfile.contains("USER 65532:65532"));
    assert!(dockerfile.contains("ENTRYPOINT [\"/usr/local/bin/mx-operator\"]"));
    let deployment =
        std::fs::read_to_string(repository().join("charts/mx-operator/templates/deployment.yaml"))
            .unwrap();
    assert!(deployment.contains("runAsUser: 65532") && deployment.contains("- run\n"));
}

#[test]
fn gateway_dockerfile_names_only_things_that_exist() {
    let dockerfile =
        std::fs::read_to_string(repository().join("deploy/gateway/Dockerfile")).unwrap();
    let install = dockerfile
        .split("apt-get install -y --no-install-recommends")
        .nth(1)
        .and_then(|rest| rest.split("&&").next())
        .expect("an apt-get install line");
    let packages: Vec<&str> = install.split_whitespace().filter(|w| *w != "\\").collect();
    assert!(packages.contains(&"postfix") && packages.contains(&"postfix-lmdb"));
    for package in &packages {
        let known = Command::new("apt-cache")
            .args(["show", package])
            .output()
            .unwrap();
        assert!(
            known.status.success(),
            "{package} is not in the Debian archive"
        );
    }

    let checked = copied_files_exist(&dockerfile);
    assert_eq!(checked, 2, "the binary and the entrypoint are copied");

    let entrypoint = repository().join("deploy/gateway/entrypoint.sh");
    let syntax = Command::new("sh")
        .arg("-n")
        .arg(&entrypoint)
        .status()
        .unwrap();
    assert!(syntax.success(), "entrypoint.sh has a shell syntax error");
    let text = std::fs::read_to_string(&entrypoint).unwrap();
    let postfix_files = Command::new("dpkg")
        .args(["-L", "postfix"])
        .output()
        .unwrap();
    let postfix_files = String::from_utf8_lossy(&postfix_files.stdout);
    assert!(
        text.contains("/usr/sbin/postfix")
            && postfix_files.lines().any(|f| f == "/usr/sbin/postfix")
    );
    assert!(
        text.contains("/usr/local/bin/mx-operator")
            && dockerfile.contains("/usr/local/bin/mx-operator")
    );
    // The StatefulSet's containers start the roles the entrypoint knows.
    for role in ["postfix)", "agent)"] {
        assert!(text.contains(role), "entrypoint lacks the {role} role");
    }
}
