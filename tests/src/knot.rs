//! A real Knot DNS server on a free loopback port, with TSIG-signed dynamic updates allowed
//! for one key on its zones.

use crate::control_plane::{HarnessError, Lifetime};
use crate::process::{Guarded, append_log, free_port, run_with_input, spawn_tied, wait_listening};
use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The TSIG key every test server trusts (base64 of 32 bytes; test-only material).
pub const TSIG_KEY_NAME: &str = "mx-operator";
pub const TSIG_SECRET: &str = "bXgtb3BlcmF0b3ItdGVzdC1rZXktMzItYnl0ZXMhISE=";

pub struct Knot {
    pub address: SocketAddr,
    pub dir: PathBuf,
    lifetime: Lifetime,
    server: Option<Guarded>,
}

impl Knot {
    /// Starts Knot serving `zones`: (zone name, zone file body after the SOA and NS).
    pub fn start(dir: &Path, zones: &[(&str, &str)]) -> Result<Self, HarnessError> {
        Self::start_on(dir, zones, None, Lifetime::TiedToThisProcess)
    }

    /// Like `start`, on a chosen port (or a free one) and with a chosen lifetime.
    pub fn start_on(
        dir: &Path,
        zones: &[(&str, &str)],
        port: Option<u16>,
        lifetime: Lifetime,
    ) -> Result<Self, HarnessError> {
        let _ = fs::remove_dir_all(dir);
        fs::create_dir_all(dir).map_err(|source| HarnessError::Io {
            what: format!("creating {}", dir.display()),
            source,
        })?;
        let port = match port {
            Some(port) => port,
            None => free_port().map_err(|source| HarnessError::Io {
                what: "finding a free port".into(),
                source,
            })?,
        };
        let address: SocketAddr = ([127, 0, 0, 1], port).into();
        let mut zone_config = String::new();
        for (zone, body) in zones {
            let file = dir.join(format!("{zone}.zone"));
            let text = format!(
                "$ORIGIN {zone}.\n$TTL 300\n@ SOA ns1.{zone}. hostmaster.{zone}. 1 3600 600 86400 300\n@ NS ns1.{zone}.\nns1 A 127.0.0.1\n{body}\n"
            );
            fs::write(&file, text).map_err(|source| HarnessError::Io {
                what: "writing a zone file".into(),
                source,
            })?;
            zone_config.push_str(&format!(
                "  - domain: {zone}\n    file: \"{}\"\n    acl: update\n    zonefile-sync: -1\n    journal-content: none\n",
                file.display()
            ));
        }
        let config = format!(
            "server:\n  rundir: \"{dir}\"\n  listen: 127.0.0.1@{port}\n\
             database:\n  storage: \"{dir}\"\n\
             log:\n  - target: stderr\n    any: info\n\
             control:\n  listen: \"{dir}/knot.sock\"\n\
             key:\n  - id: {TSIG_KEY_NAME}\n    algorithm: hmac-sha256\n    secret: {TSIG_SECRET}\n\
             acl:\n  - id: update\n    key: {TSIG_KEY_NAME}\n    action: update\n\
             zone:\n{zone_config}",
            dir = dir.display()
        );
        fs::write(dir.join("knot.conf"), config).map_err(|source| HarnessError::Io {
            what: "writing knot.conf".into(),
            source,
        })?;
        let mut knot = Self {
            address,
            dir: dir.to_path_buf(),
            lifetime,
            server: None,
        };
        knot.resume()?;
        Ok(knot)
    }

    /// Stops the server. Updates live only in memory (no journal, no zone file sync), so a
    /// restarted server has forgotten them, as after losing its data.
    pub fn pause(&mut self) {
        self.server = None;
    }

    /// Stops the server process without ending it (SIGSTOP): queries are received and
    /// never answered, as with a resolver that times out.
    pub fn freeze(&self) {
        self.signal(libc::SIGSTOP);
    }

    /// Lets a frozen server go on (SIGCONT), with all its data.
    pub fn thaw(&self) {
        self.signal(libc::SIGCONT);
    }

    fn signal(&self, signal: libc::c_int) {
        if let Some(server) = &self.server {
            // SAFETY: kill(2) on the pid of a child this process owns and has not reaped.
            unsafe {
                libc::kill(server.id() as libc::pid_t, signal);
            }
        }
    }

    /// (Re)starts the server and waits until it answers.
    pub fn resume(&mut self) -> Result<(), HarnessError> {
        let log = append_log(&self.dir.join("knot.log"))?;
        let stderr = log.try_clone().map_err(|source| HarnessError::Io {
            what: "log handle".into(),
            source,
        })?;
        let mut command = Command::new("knotd");
        command
            .arg("-c")
            .arg(self.dir.join("knot.conf"))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(stderr);
        let child = match self.lifetime {
            Lifetime::TiedToThisProcess => spawn_tied(command),
            Lifetime::Detached => {
                use std::os::unix::process::CommandExt;
                command.process_group(0).spawn()
            }
        }
        .map_err(|source| HarnessError::Io {
            what: "starting knotd".into(),
            source,
        })?;
        if self.lifetime == Lifetime::Detached {
            // The demo's server outlives this process; `local-cluster down` stops it by pid.
            fs::write(self.dir.join("knotd.pid"), child.id().to_string()).map_err(|source| {
                HarnessError::Io {
                    what: "writing knotd.pid".into(),
                    source,
                }
            })?;
        } else {
            self.server = Some(Guarded::new("knotd", child));
        }
        wait_listening("knotd", self.address, &self.dir.join("knot.log"))
    }

    /// `kdig` answer lines for `name` `type` from this server.
    pub fn dig(&self, name: &str, record_type: &str) -> Vec<String> {
        let output = Command::new("kdig")
            .arg(format!("@{}", self.address.ip()))
            .args([
                "-p",
                &self.address.port().to_string(),
                "+short",
                "+tcp",
                name,
                record_type,
            ])
            .output();
        match output {
            Ok(output) => String::from_utf8_lossy(&output.stdout)
                .lines()
                .map(str::to_string)
                .collect(),
            Err(_) => vec![],
        }
    }

    /// Sends a signed update to `zone` with `knsupdate` (a change behind the operator's back).
    pub fn nsupdate(&self, zone: &str, commands: &str) -> Result<(), HarnessError> {
        let script = format!(
            "server {} {}\nzone {zone}.\nkey hmac-sha256:{TSIG_KEY_NAME} {TSIG_SECRET}\n{commands}\nsend\n",
            self.address.ip(),
            self.address.port()
        );
        run_with_input(Command::new("knsupdate"), &script).map(drop)
    }
}
