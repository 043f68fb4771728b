//! A real nginx on free loopback ports (HTTP and HTTPS, with a certificate for 127.0.0.1
//! from a CA made for it), standing in for a primary that serves its recipient list:
//! static files with nginx's own `ETag` and `If-None-Match` handling, `/bearer/` behind a
//! bearer token and `/basic/` behind basic authentication. Its access log records each
//! request's status and body bytes.

use crate::control_plane::HarnessError;
use crate::process::{Guarded, append_log, free_port, run_with_input, spawn_tied, wait_listening};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Test-only credentials.
pub const TOKEN: &str = "list-reader-token";
pub const USER: &str = "mx-backup";
pub const PASSWORD: &str = "basic-test-only";

pub struct Nginx {
    /// `http://127.0.0.1:port` and `https://127.0.0.1:port`.
    pub http_url: String,
    pub https_url: String,
    pub ca_pem: String,
    dir: PathBuf,
    _server: Guarded,
}

/// One request as the access log has it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Logged {
    pub path: String,
    pub status: u16,
    pub body_bytes: u64,
}

impl Nginx {
    pub fn start(dir: &Path) -> Result<Self, HarnessError> {
        let io = |what: &str| {
            let what = what.to_string();
            move |source| HarnessError::Io { what, source }
        };
        let _ = fs::remove_dir_all(dir);
        for sub in ["www/bearer", "www/basic", "tmp"] {
            fs::create_dir_all(dir.join(sub)).map_err(io("creating the nginx directory"))?;
        }
        let ca_pem = crate::tls::server_certificate(dir)?;
        let mut htpasswd = Command::new("openssl");
        htpasswd.args(["passwd", "-apr1", "-stdin"]);
        let hash = run_with_input(htpasswd, PASSWORD)?;
        fs::write(dir.join("htpasswd"), format!("{USER}:{}\n", hash.trim()))
            .map_err(io("writing htpasswd"))?;
        let (http, https) = (
            free_port().map_err(io("finding a free port"))?,
            free_port().map_err(io("finding a free port"))?,
        );
        // One process, no workers: the harness stops it with SIGKILL, which a master would
        // not pass on, and its workers would outlive the test.
        let config = format!(
            "daemon off;
master_process off;
pid {dir}/nginx.pid;
error_log {dir}/error.log;
events {{ worker_connections 64; }}
http {{
  log_format list '$status $body_bytes_sent $uri';
  access_log {dir}/access.log list;
  client_body_temp_path {dir}/tmp;
  proxy_temp_path {dir}/tmp;
  fastcgi_temp_path {dir}/tmp;
  uwsgi_temp_path {dir}/tmp;
  scgi_temp_path {dir}/tmp;
  default_type text/plain;
  server {{
    listen 127.0.0.1:{http};
    listen 127.0.0.1:{https} ssl;
    ssl_certificate {dir}/server.crt;
    ssl_certificate_key {dir}/server.key;
    root {dir}/www;
    location /bearer/ {{
      if ($http_authorization != \"Bearer {TOKEN}\") {{ return 401; }}
    }}
    location /basic/ {{
      auth_basic lists;
      auth_basic_user_file {dir}/htpasswd;
    }}
  }}
}}
",
            dir = dir.display()
        );
        fs::write(dir.join("nginx.conf"), config).map_err(io("writing nginx.conf"))?;
        let mut command = Command::new("nginx");
        command
            .arg("-c")
            .arg(dir.join("nginx.conf"))
            .arg("-e")
            .arg(dir.join("error.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(append_log(&dir.join("error.log"))?);
        let server = spawn_tied(command).map_err(io("starting nginx"))?;
        let server = Guarded::new("nginx", server);
        wait_listening(
            "nginx",
            ([127, 0, 0, 1], https).into(),
            &dir.join("error.log"),
        )?;
        Ok(Self {
            http_url: format!("http://127.0.0.1:{http}"),
            https_url: format!("https://127.0.0.1:{https}"),
            ca_pem,
            dir: dir.to_path_buf(),
            _server: server,
        })
    }

    /// Serves `body` at `path` (for example `bearer/users.txt`).
    pub fn serve(&self, path: &str, body: &str) -> Result<(), HarnessError> {
        self.serve_bytes(path, body.as_bytes())
    }

    /// Serves `body`, which need not be UTF-8, at `path`.
    pub fn serve_bytes(&self, path: &str, body: &[u8]) -> Result<(), HarnessError> {
        // Written beside and renamed: nginx never serves half a file.
        let target = self.dir.join("www").join(path);
        let partial = target.with_extension("partial");
        fs::write(&partial, body)
            .and_then(|()| fs::rename(&partial, &target))
            .map_err(|source| HarnessError::Io {
                what: format!("serving {path}"),
                source,
            })
    }

    /// Stops serving `path`: nginx answers 404 for it.
    pub fn withdraw(&self, path: &str) -> Result<(), HarnessError> {
        fs::remove_file(self.dir.join("www").join(path)).map_err(|source| HarnessError::Io {
            what: format!("withdrawing {path}"),
            source,
        })
    }

    /// The requests served so far.
    pub fn requests(&self) -> Vec<Logged> {
        fs::read_to_string(self.dir.join("access.log"))
            .unwrap_or_default()
            .lines()
            .filter_map(|line| {
                let mut fields = line.split(' ');
                Some(Logged {
                    status: fields.next()?.parse().ok()?,
                    body_bytes: fields.next()?.parse().ok()?,
                    path: fields.next()?.to_string(),
                })
            })
            .collect()
    }
}
