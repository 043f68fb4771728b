//! The edge to Postfix: files in its configuration folder, `postmap`, `postfix reload`
//! and `postqueue -j`. Lookup tables are replaced by rename, which Postfix daemons notice
//! and pick up for the next client without a reload.

use crate::render::{Assembled, Table, TableType};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt;
use tokio::process::Command;

const MAPS: &str = "maps";
const STAGING: &str = ".staging";
const RELOAD_TABLES: [&str; 2] = [
    crate::render::keys::RELAY_DOMAINS,
    crate::render::keys::TRANSPORT,
];
/// The last good MailRelays, saved in the configuration folder after every complete load:
/// its presence says that main.cf and every table are in place, so the gateway image's
/// entrypoint starts Postfix only once it exists.
pub const LAST_GOOD_FILE: &str = "mx-agent-last-good.json";
/// The draining routes, in the queue directory (a volume that outlives the pod).
const DRAINING_FILE: &str = "mx-agent-draining.json";
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
/// Reloads come no closer together than this: a burst of changes (domains added one by one,
/// a gateway edited in a loop) becomes one reload a few seconds later, not one per change.
/// A reload never cuts a session (each process ends its session first), but a master
/// reloaded many times a second has wedged (its log service and the tools waiting on it).
pub const RELOAD_SPACING: Duration = Duration::from_secs(5);
/// The longest a queue listing may take while it keeps printing (a very large queue).
const QUEUE_LISTING_LIMIT: Duration = Duration::from_secs(30 * 60);

#[derive(Debug, thiserror::Error)]
pub enum PostfixError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("`{command}` failed: {output}")]
    Command { command: String, output: String },
}

impl PostfixError {
    /// Short label for the load-errors metric.
    pub fn reason(&self) -> &'static str {
        match self {
            PostfixError::Io { .. } => "write",
            PostfixError::Command { .. } => "postfix_command",
        }
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> PostfixError {
    let path = path.to_path_buf();
    move |source| PostfixError::Io { path, source }
}

/// A Postfix instance's configuration folder (`postfix -c DIR`).
pub struct Postfix {
    dir: PathBuf,
    /// The tables this process wrote, as written.
    written: Mutex<BTreeMap<String, Table>>,
    reloads: Mutex<Reloads>,
}

/// When Postfix was last reloaded, and whether a reload waits for its turn.
#[derive(Default)]
struct Reloads {
    last: Option<Instant>,
    pending: bool,
}

impl Postfix {
    pub fn new(dir: PathBuf) -> Self {
        Self {
            dir,
            written: Mutex::default(),
            reloads: Mutex::default(),
        }
    }

    fn reloads<T>(&self, action: impl FnOnce(&mut Reloads) -> T) -> T {
        action(
            &mut self
                .reloads
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        )
    }

    /// When a reload put off by [`RELOAD_SPACING`] is due, if one is.
    pub fn reload_due(&self) -> Option<Instant> {
        self.reloads(|reloads| {
            reloads.pending.then(|| {
                reloads
                    .last
                    .map_or_else(Instant::now, |last| last + RELOAD_SPACING)
            })
        })
    }

    /// Reloads now if the last reload is [`RELOAD_SPACING`] ago, else marks one pending
    /// (see [`Self::reload_due`]). True if it reloaded.
    pub async fn reload_when_spaced(&self) -> Result<bool, PostfixError> {
        let now = Instant::now();
        let too_soon = self.reloads(|reloads| {
            let too_soon = reloads
                .last
                .is_some_and(|last| now.duration_since(last) < RELOAD_SPACING);
            reloads.pending = too_soon;
            if !too_soon {
                reloads.last = Some(now);
            }
            too_soon
        });
        if too_soon {
            return Ok(false);
        }
        if let Err(error) = self.command("postfix", &["reload"]).await {
            // Tried again at the next turn.
            self.reloads(|reloads| reloads.pending = true);
            return Err(error);
        }
        Ok(true)
    }

    /// Writes what changed and reloads Postfix if it runs and main.cf, master.cf or a cidr
    /// table changed. Returns whether it reloaded. On a failed check of the new main.cf the
    /// previous files are put back.
    pub async fn apply(&self, files: &Assembled) -> Result<bool, PostfixError> {
        let staging = self.dir.join(MAPS).join(STAGING);
        tokio::fs::create_dir_all(&staging)
            .await
            .map_err(io(&staging))?;
        let main_cf = self.dir.join("main.cf");
        let master_cf = self.dir.join("master.cf");
        let old_main = read_or_empty(&main_cf).await?;
        let old_master = read_or_empty(&master_cf).await?;
        if old_main.is_empty() {
            // postmap reads main.cf, so a fresh folder gets it before the tables.
            write_atomic(&main_cf, &files.main_cf).await?;
            write_atomic(&master_cf, &files.master_cf).await?;
        }
        let mut reload = false;
        for (name, table) in &files.tables {
            let written = self.write_table(name, table).await?;
            // cidr tables are read at process start; and trivial-rewrite, which answers
            // "is this domain ours", notices a new relay_domains or transport table only
            // after many seconds. A reload (no restart, nothing dropped) makes a domain that
            // comes, goes or moves effective at once; recipient changes need none.
            reload |= written
                && (table.kind == TableType::Cidr || RELOAD_TABLES.contains(&name.as_str()));
        }
        let files_changed = old_main != files.main_cf || old_master != files.master_cf;
        if files_changed {
            write_atomic(&main_cf, &files.main_cf).await?;
            write_atomic(&master_cf, &files.master_cf).await?;
            if let Err(error) = self.command("postconf", &["mail_version"]).await {
                if !old_main.is_empty() {
                    write_atomic(&main_cf, &old_main).await?;
                    write_atomic(&master_cf, &old_master).await?;
                }
                return Err(error);
            }
        }
        self.remove_unused_tables(files).await?;
        let running = self.running().await;
        if running && (reload || (files_changed && !old_main.is_empty())) {
            return self.reload_when_spaced().await;
        }
        Ok(false)
    }

    /// Writes one table if its source differs from what is on disk (known without reading
    /// it back when this process wrote it: a shard of a million-address list need not be
    /// read to be found unchanged); true if it did.
    async fn write_table(&self, name: &str, table: &Table) -> Result<bool, PostfixError> {
        let maps = self.dir.join(MAPS);
        let source = maps.join(name);
        let compiled = maps.join(format!("{name}.lmdb"));
        let compiled_present = table.kind == TableType::Cidr
            || tokio::fs::try_exists(&compiled).await.unwrap_or(false);
        let known = self.written(|written| written.get(name) == Some(table));
        let unchanged = known || *read_or_empty(&source).await? == *table.source;
        if unchanged && compiled_present && tokio::fs::try_exists(&source).await.unwrap_or(false) {
            return Ok(false);
        }
        let staged = maps.join(STAGING).join(name);
        tokio::fs::write(&staged, table.source.as_bytes())
            .await
            .map_err(io(&staged))?;
        if table.kind == TableType::Lmdb {
            let map = format!("lmdb:{}", staged.display());
            self.command("postmap", &[&map]).await?;
            let staged_lmdb = maps.join(STAGING).join(format!("{name}.lmdb"));
            tokio::fs::rename(&staged_lmdb, &compiled)
                .await
                .map_err(io(&compiled))?;
        }
        tokio::fs::rename(&staged, &source)
            .await
            .map_err(io(&source))?;
        self.written(|written| written.insert(name.to_string(), table.clone()));
        Ok(true)
    }

    fn written<T>(&self, action: impl FnOnce(&mut BTreeMap<String, Table>) -> T) -> T {
        action(
            &mut self
                .written
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        )
    }

    /// Per-domain tables of domains that are gone; main.cf no longer names them.
    async fn remove_unused_tables(&self, files: &Assembled) -> Result<(), PostfixError> {
        let maps = self.dir.join(MAPS);
        let mut entries = tokio::fs::read_dir(&maps).await.map_err(io(&maps))?;
        while let Some(entry) = entries.next_entry().await.map_err(io(&maps))? {
            let file_name = entry.file_name().to_string_lossy().into_owned();
            let table = file_name.strip_suffix(".lmdb").unwrap_or(&file_name);
            if table != STAGING && !files.tables.contains_key(table) {
                self.written(|written| written.remove(table));
                tokio::fs::remove_file(entry.path())
                    .await
                    .map_err(io(&entry.path()))?;
            }
        }
        Ok(())
    }

    fn last_good_path(&self) -> PathBuf {
        self.dir.join(LAST_GOOD_FILE)
    }

    /// The draining routes saved by `save_draining` in `queue_directory` (none saved:
    /// none).
    pub async fn load_draining(
        &self,
        queue_directory: &Path,
    ) -> Result<super::DrainingRoutes, PostfixError> {
        let path = queue_directory.join(DRAINING_FILE);
        let text = read_or_empty(&path).await?;
        if text.is_empty() {
            return Ok(Default::default());
        }
        serde_json::from_str(&text).map_err(|e| io(&path)(std::io::Error::other(e)))
    }

    pub async fn save_draining(
        &self,
        queue_directory: &Path,
        routes: &super::DrainingRoutes,
    ) -> Result<(), PostfixError> {
        let path = queue_directory.join(DRAINING_FILE);
        let text =
            serde_json::to_string(routes).map_err(|e| io(&path)(std::io::Error::other(e)))?;
        write_atomic(&path, &text).await
    }

    /// The last good MailRelays saved by `save_last_good`, if any.
    pub async fn load_last_good(&self) -> Result<Option<super::LastGood>, PostfixError> {
        let path = self.last_good_path();
        let text = read_or_empty(&path).await?;
        if text.is_empty() {
            return Ok(None);
        }
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| io(&path)(std::io::Error::other(e)))
    }

    pub async fn save_last_good(&self, last_good: &super::LastGood) -> Result<(), PostfixError> {
        let path = self.last_good_path();
        let text =
            serde_json::to_string(last_good).map_err(|e| io(&path)(std::io::Error::other(e)))?;
        write_atomic(&path, &text).await
    }

    /// Whether a Postfix master runs for this folder: its pid file names a live `master`
    /// process. Read from files rather than with `postfix status`, which writes a line to
    /// the mail log each time it is asked.
    pub async fn running(&self) -> bool {
        let Ok(queue) = self.command("postconf", &["-h", "queue_directory"]).await else {
            return false;
        };
        let pid_file = Path::new(queue.trim()).join("pid/master.pid");
        let Ok(pid) = tokio::fs::read_to_string(&pid_file).await else {
            return false;
        };
        let Ok(pid) = pid.trim().parse::<u32>() else {
            return false;
        };
        // The pid file outlives a master that crashed (the queue is a volume): the process
        // must exist and be a master.
        tokio::fs::read_to_string(format!("/proc/{pid}/comm"))
            .await
            .is_ok_and(|name| name.trim() == "master")
    }

    /// `postqueue -j` output. A listing that goes `stall` without a byte or its end is
    /// given up: Postfix does not answer (a master that is stopped or wedged accepts the
    /// connection and never starts `showq`). A large queue that keeps printing is not.
    pub async fn queue(&self, stall: Duration) -> Result<String, PostfixError> {
        let failed = |output: String| PostfixError::Command {
            command: self.described("postqueue", &["-j"]),
            output,
        };
        let mut child = self
            .tool("postqueue", &["-j"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .map_err(|e| failed(e.to_string()))?;
        let (Some(mut stdout), Some(mut stderr)) = (child.stdout.take(), child.stderr.take())
        else {
            return Err(failed("its output could not be read".into()));
        };
        let started = Instant::now();
        let mut listing = Vec::new();
        let mut chunk = vec![0; 64 * 1024];
        loop {
            let read = tokio::time::timeout(stall, stdout.read(&mut chunk))
                .await
                .map_err(|_| failed(format!("no output for {stall:?}")))?
                .map_err(|e| failed(e.to_string()))?;
            if read == 0 {
                break;
            }
            listing.extend_from_slice(&chunk[..read]);
            if started.elapsed() > QUEUE_LISTING_LIMIT {
                return Err(failed(format!(
                    "the listing took longer than {QUEUE_LISTING_LIMIT:?}"
                )));
            }
        }
        let mut errors = Vec::new();
        let status = tokio::time::timeout(stall, async {
            // stderr is small and closed with stdout; read it before reaping the process.
            let _ = stderr.read_to_end(&mut errors).await;
            child.wait().await
        })
        .await
        .map_err(|_| failed(format!("it did not exit within {stall:?} after its output")))?
        .map_err(|e| failed(e.to_string()))?;
        if status.success() {
            return Ok(String::from_utf8_lossy(&listing).into_owned());
        }
        Err(failed(String::from_utf8_lossy(&errors).trim().to_string()))
    }

    /// `postqueue -f`: every queued message is tried now, deferred or not.
    pub async fn flush(&self) -> Result<(), PostfixError> {
        self.command("postqueue", &["-f"]).await.map(|_| ())
    }

    /// `postqueue -i`: the deferred message `queue_id` is tried now.
    pub async fn deliver_now(&self, queue_id: &str) -> Result<(), PostfixError> {
        self.command("postqueue", &["-i", queue_id])
            .await
            .map(|_| ())
    }

    /// `postsuper -d`: the message `queue_id` is removed from the queue, undelivered.
    pub async fn delete(&self, queue_id: &str) -> Result<(), PostfixError> {
        self.command("postsuper", &["-d", queue_id])
            .await
            .map(|_| ())
    }

    async fn command(&self, program: &str, args: &[&str]) -> Result<String, PostfixError> {
        self.command_within(COMMAND_TIMEOUT, program, args).await
    }

    /// Postfix tool `program` for this folder, killed when dropped (a timeout).
    fn tool(&self, program: &str, args: &[&str]) -> Command {
        let mut command = Command::new(program);
        command
            .arg("-c")
            .arg(&self.dir)
            .args(args)
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true);
        command
    }

    fn described(&self, program: &str, args: &[&str]) -> String {
        format!("{program} -c {} {}", self.dir.display(), args.join(" "))
    }

    async fn command_within(
        &self,
        timeout: Duration,
        program: &str,
        args: &[&str],
    ) -> Result<String, PostfixError> {
        let described = || self.described(program, args);
        let run = self.tool(program, args).output();
        // A Postfix tool that hangs must not stop the agent from serving its probes.
        let output = tokio::time::timeout(timeout, run)
            .await
            .map_err(|_| PostfixError::Command {
                command: described(),
                output: format!("no answer within {timeout:?}"),
            })?
            .map_err(|source| PostfixError::Command {
                command: described(),
                output: source.to_string(),
            })?;
        if output.status.success() {
            return Ok(String::from_utf8_lossy(&output.stdout).into_owned());
        }
        Err(PostfixError::Command {
            command: described(),
            output: format!(
                "{}{}",
                String::from_utf8_lossy(&output.stderr).trim(),
                String::from_utf8_lossy(&output.stdout).trim()
            ),
        })
    }
}

async fn read_or_empty(path: &Path) -> Result<String, PostfixError> {
    match tokio::fs::read_to_string(path).await {
        Ok(text) => Ok(text),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
        Err(error) => Err(io(path)(error)),
    }
}

async fn write_atomic(path: &Path, content: &str) -> Result<(), PostfixError> {
    let temporary = path.with_extension("mx-agent-tmp");
    tokio::fs::write(&temporary, content)
        .await
        .map_err(io(&temporary))?;
    tokio::fs::rename(&temporary, path).await.map_err(io(path))
}
