//! The SMTP probe: the gateway's answers to RCPT commands (EHLO, MAIL, RCPT, RSET, QUIT —
//! no mail is ever sent) and a primary's greeting. What the answers mean is decided in
//! `drift::decide`.

use super::Prober;
use futures::future::BoxFuture;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

/// One SMTP reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    pub text: String,
}

impl Reply {
    pub(crate) fn class(&self) -> u16 {
        self.code / 100
    }
}

impl std::fmt::Display for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.code, self.text)
    }
}

/// The gateway's answers to the probe's three RCPT commands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeReplies {
    /// For a recipient that exists (none when the domain is catch-all only).
    pub known: Option<(String, Reply)>,
    /// For a random recipient of the domain.
    pub random: Reply,
    /// For a domain the gateway does not serve.
    pub foreign: Reply,
}

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("cannot resolve {0}")]
    Resolve(String),
    #[error("cannot connect to {target}: {source}")]
    Connect {
        target: String,
        #[source]
        source: std::io::Error,
    },
    #[error("no answer from {0} in time")]
    Timeout(String),
    #[error("{target} broke the SMTP dialogue: {detail}")]
    Protocol { target: String, detail: String },
}

/// An SMTP client session, read reply by reply.
struct Session {
    target: String,
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
}

impl Session {
    async fn connect(target: &str) -> Result<(Self, Reply), ProbeError> {
        let stream = TcpStream::connect(target)
            .await
            .map_err(|source| match source.kind() {
                std::io::ErrorKind::InvalidInput | std::io::ErrorKind::NotFound => {
                    ProbeError::Resolve(target.to_string())
                }
                _ if source.to_string().contains("lookup") => {
                    ProbeError::Resolve(target.to_string())
                }
                _ => ProbeError::Connect {
                    target: target.to_string(),
                    source,
                },
            })?;
        let (read, writer) = stream.into_split();
        let mut session = Self {
            target: target.to_string(),
            reader: BufReader::new(read),
            writer,
        };
        let banner = session.reply().await?;
        Ok((session, banner))
    }

    fn broken(&self, detail: impl Into<String>) -> ProbeError {
        ProbeError::Protocol {
            target: self.target.clone(),
            detail: detail.into(),
        }
    }

    /// One reply, joining the lines of a multi-line one.
    async fn reply(&mut self) -> Result<Reply, ProbeError> {
        let mut text = vec![];
        loop {
            let mut line = String::new();
            let read = self
                .reader
                .read_line(&mut line)
                .await
                .map_err(|e| self.broken(e.to_string()))?;
            if read == 0 {
                return Err(self.broken("the connection closed"));
            }
            let line = line.trim_end();
            let code = line
                .get(..3)
                .and_then(|c| c.parse::<u16>().ok())
                .ok_or_else(|| self.broken(format!("not an SMTP reply: {line:?}")))?;
            text.push(line.get(4..).unwrap_or_default().to_string());
            if line.as_bytes().get(3) != Some(&b'-') {
                return Ok(Reply {
                    code,
                    text: text.join(" "),
                });
            }
        }
    }

    async fn command(&mut self, line: &str) -> Result<Reply, ProbeError> {
        self.writer
            .write_all(format!("{line}\r\n").as_bytes())
            .await
            .map_err(|e| self.broken(e.to_string()))?;
        self.reply().await
    }

    async fn quit(mut self) {
        let _ = self.command("QUIT").await;
    }
}

async fn within<T>(
    limit: Duration,
    target: &str,
    work: impl Future<Output = Result<T, ProbeError>>,
) -> Result<T, ProbeError> {
    tokio::time::timeout(limit, work)
        .await
        .map_err(|_| ProbeError::Timeout(target.to_string()))?
}

/// The greeting of the server at `target` (`host:port`).
pub async fn banner(target: &str, limit: Duration) -> Result<Reply, ProbeError> {
    within(limit, target, async {
        let (session, banner) = Session::connect(target).await?;
        session.quit().await;
        Ok(banner)
    })
    .await
}

/// What the probe asks the gateway.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recipients {
    /// Name given in EHLO.
    pub helo: String,
    pub known: Option<String>,
    pub random: String,
    pub foreign: String,
}

/// Asks the gateway at `target` about three recipients with the null sender, then RSET
/// and QUIT: nothing is ever sent.
pub async fn recipients(
    target: &str,
    ask: &Recipients,
    limit: Duration,
) -> Result<ProbeReplies, ProbeError> {
    within(limit, target, async {
        let (mut session, banner) = Session::connect(target).await?;
        if banner.code != 220 {
            return Err(session.broken(format!("greeting {banner}")));
        }
        let ehlo = session.command(&format!("EHLO {}", ask.helo)).await?;
        if ehlo.code != 250 {
            return Err(session.broken(format!("EHLO answered {ehlo}")));
        }
        let mail = session.command("MAIL FROM:<>").await?;
        if mail.code != 250 {
            return Err(session.broken(format!("MAIL FROM:<> answered {mail}")));
        }
        let mut rcpt = async |address: &str| session.command(&format!("RCPT TO:<{address}>")).await;
        let known = match &ask.known {
            Some(address) => Some((address.clone(), rcpt(address).await?)),
            None => None,
        };
        let random = rcpt(&ask.random).await?;
        let foreign = rcpt(&ask.foreign).await?;
        let _ = session.command("RSET").await;
        session.quit().await;
        Ok(ProbeReplies {
            known,
            random,
            foreign,
        })
    })
    .await
}

/// The probe over TCP.
pub struct Smtp;

impl Prober for Smtp {
    fn banner<'a>(
        &'a self,
        target: &'a str,
        limit: Duration,
    ) -> BoxFuture<'a, Result<Reply, String>> {
        Box::pin(async move { banner(target, limit).await.map_err(|e| e.to_string()) })
    }

    fn recipients<'a>(
        &'a self,
        target: &'a str,
        ask: &'a Recipients,
        limit: Duration,
    ) -> BoxFuture<'a, Result<ProbeReplies, String>> {
        Box::pin(async move {
            recipients(target, ask, limit)
                .await
                .map_err(|e| e.to_string())
        })
    }
}
