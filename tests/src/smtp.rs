//! A small SMTP client that reports every reply code, and an SMTP sink that stands in for a
//! customer's primary mail server and records what it receives (with arrival times).

use std::io::{self, BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// One SMTP reply: code and the text of its last line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    pub text: String,
}

impl std::fmt::Display for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.code, self.text)
    }
}

/// An SMTP client session.
pub struct Client {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Client {
    /// Connects, reads the greeting and says EHLO.
    pub fn connect(address: SocketAddr) -> io::Result<Self> {
        let stream = TcpStream::connect_timeout(&address, Duration::from_secs(5))?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        let mut client = Self {
            reader: BufReader::new(stream.try_clone()?),
            writer: stream,
        };
        let greeting = client.reply()?;
        if greeting.code != 220 {
            return Err(io::Error::other(format!("greeting: {greeting}")));
        }
        let ehlo = client.command("EHLO client.test")?;
        if ehlo.code != 250 {
            return Err(io::Error::other(format!("EHLO: {ehlo}")));
        }
        Ok(client)
    }

    fn reply(&mut self) -> io::Result<Reply> {
        loop {
            let mut line = String::new();
            if self.reader.read_line(&mut line)? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed",
                ));
            }
            let line = line.trim_end();
            let code = line
                .get(..3)
                .and_then(|c| c.parse().ok())
                .ok_or_else(|| io::Error::other(format!("not an SMTP reply: {line:?}")))?;
            if line.as_bytes().get(3) != Some(&b'-') {
                return Ok(Reply {
                    code,
                    text: line.get(4..).unwrap_or_default().to_string(),
                });
            }
        }
    }

    /// Sends one command line and returns the reply.
    pub fn command(&mut self, line: &str) -> io::Result<Reply> {
        self.writer.write_all(line.as_bytes())?;
        self.writer.write_all(b"\r\n")?;
        self.reply()
    }

    /// Sends a message body after an accepted DATA.
    pub fn data(&mut self, body: &str) -> io::Result<Reply> {
        let start = self.command("DATA")?;
        if start.code != 354 {
            return Ok(start);
        }
        for line in body.lines() {
            // Dot-stuffing, as RFC 5321 asks.
            if line.starts_with('.') {
                self.writer.write_all(b".")?;
            }
            self.writer.write_all(line.as_bytes())?;
            self.writer.write_all(b"\r\n")?;
        }
        self.command(".")
    }

    pub fn quit(mut self) {
        let _ = self.command("QUIT");
    }
}

/// The reply to `RCPT TO:<recipient>` after `MAIL FROM:<sender>`, in a fresh session.
pub fn rcpt_reply(address: SocketAddr, sender: &str, recipient: &str) -> io::Result<Reply> {
    let mut client = Client::connect(address)?;
    let mail = client.command(&format!("MAIL FROM:<{sender}>"))?;
    if mail.code != 250 {
        return Ok(mail);
    }
    let reply = client.command(&format!("RCPT TO:<{recipient}>"))?;
    client.quit();
    Ok(reply)
}

/// Sends one message; the reply to the end of DATA (or the first refusal).
pub fn send(address: SocketAddr, sender: &str, recipient: &str, body: &str) -> io::Result<Reply> {
    let mut client = Client::connect(address)?;
    let reply = client.send(sender, recipient, body)?;
    client.quit();
    Ok(reply)
}

impl Client {
    /// Sends one message in this session; the reply to the end of DATA (or the first
    /// refusal, after which the session is reset).
    pub fn send(&mut self, sender: &str, recipient: &str, body: &str) -> io::Result<Reply> {
        for command in [
            format!("MAIL FROM:<{sender}>"),
            format!("RCPT TO:<{recipient}>"),
        ] {
            let reply = self.command(&command)?;
            if reply.code != 250 {
                self.command("RSET")?;
                return Ok(reply);
            }
        }
        self.data(body)
    }
}

/// A message the sink accepted.
#[derive(Clone, Debug)]
pub struct Received {
    pub sender: String,
    pub recipients: Vec<String>,
    pub data: String,
    pub at: Instant,
}

/// A minimal SMTP server on a free loopback port that accepts everything and records it,
/// and how many sessions were open at once.
pub struct Sink {
    pub address: SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
    sessions: Arc<Sessions>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// Open sessions now, and each session's start with the count it made.
#[derive(Default)]
struct Sessions {
    open: std::sync::atomic::AtomicUsize,
    opened: Mutex<Vec<(Instant, usize)>>,
}

/// How a sink answers.
#[derive(Clone, Default)]
struct Behaviour {
    refused: Vec<String>,
    /// Time taken before each message's final answer, like a busy primary.
    per_message: Duration,
}

impl Sink {
    pub fn start() -> io::Result<Self> {
        Self::start_on(([127, 0, 0, 1], 0).into())
    }

    /// Starts on `address` (port 0: a free one), e.g. to come back on the same port.
    pub fn start_on(address: SocketAddr) -> io::Result<Self> {
        Self::start_refusing(address, &[])
    }

    /// Like `start_on`, answering `550 5.1.1` to RCPT for each of `refused` (the way a
    /// primary refuses a user it no longer has).
    pub fn start_refusing(address: SocketAddr, refused: &[&str]) -> io::Result<Self> {
        Self::start_with(
            address,
            Behaviour {
                refused: refused.iter().map(|r| r.to_ascii_lowercase()).collect(),
                ..Behaviour::default()
            },
        )
    }

    /// Like `start_on`, taking `per_message` to accept each message.
    pub fn start_slow(address: SocketAddr, per_message: Duration) -> io::Result<Self> {
        Self::start_with(
            address,
            Behaviour {
                per_message,
                ..Behaviour::default()
            },
        )
    }

    fn start_with(address: SocketAddr, behaviour: Behaviour) -> io::Result<Self> {
        let behaviour = Arc::new(behaviour);
        let sessions = Arc::new(Sessions::default());
        let listener = TcpListener::bind(address)?;
        let address = listener.local_addr()?;
        let received = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let received = received.clone();
            let stop = stop.clone();
            let sessions = sessions.clone();
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let received = received.clone();
                    let behaviour = behaviour.clone();
                    let sessions = sessions.clone();
                    std::thread::spawn(move || {
                        let open = sessions.open.fetch_add(1, Ordering::SeqCst) + 1;
                        if let Ok(mut opened) = sessions.opened.lock() {
                            opened.push((Instant::now(), open));
                        }
                        let _ = serve(stream, &received, &behaviour);
                        sessions.open.fetch_sub(1, Ordering::SeqCst);
                    });
                }
            })
        };
        Ok(Self {
            address,
            received,
            sessions,
            stop,
            thread: Some(thread),
        })
    }

    pub fn received(&self) -> Vec<Received> {
        self.received.lock().map(|r| r.clone()).unwrap_or_default()
    }

    /// When each session began, and how many were open with it.
    pub fn sessions_opened(&self) -> Vec<(Instant, usize)> {
        self.sessions
            .opened
            .lock()
            .map(|o| o.clone())
            .unwrap_or_default()
    }

    /// The `X-Seq:` numbers of the messages received, sorted without repeats, and how
    /// many numbered messages arrived in all (more than the numbers: some came twice).
    pub fn sequence_numbers(&self) -> (Vec<usize>, usize) {
        let mut numbers: Vec<usize> = self
            .received()
            .iter()
            .filter_map(|m| {
                m.data
                    .lines()
                    .find_map(|l| l.strip_prefix("X-Seq: "))
                    .and_then(|n| n.trim().parse().ok())
            })
            .collect();
        numbers.sort_unstable();
        let total = numbers.len();
        numbers.dedup();
        (numbers, total)
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect_timeout(&self.address, Duration::from_secs(1));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn serve(
    stream: TcpStream,
    received: &Mutex<Vec<Received>>,
    behaviour: &Behaviour,
) -> io::Result<()> {
    let refused = &behaviour.refused;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = stream;
    writer.write_all(b"220 sink.test ESMTP\r\n")?;
    let (mut sender, mut recipients) = (String::new(), Vec::new());
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let upper = line.trim_end().to_ascii_uppercase();
        let argument = |prefix: &str| {
            line.trim_end()
                .get(prefix.len()..)
                .map(|a| {
                    a.trim_start_matches('<')
                        .split('>')
                        .next()
                        .unwrap_or_default()
                        .to_string()
                })
                .unwrap_or_default()
        };
        let answer: &[u8] = if upper.starts_with("EHLO") {
            b"250-sink.test\r\n250 8BITMIME\r\n"
        } else if upper.starts_with("HELO") || upper.starts_with("NOOP") {
            b"250 ok\r\n"
        } else if upper.starts_with("MAIL FROM:") {
            sender = argument("MAIL FROM:");
            recipients.clear();
            b"250 ok\r\n"
        } else if upper.starts_with("RCPT TO:") {
            let recipient = argument("RCPT TO:");
            if refused.contains(&recipient.to_ascii_lowercase()) {
                b"550 5.1.1 no such user here\r\n"
            } else {
                recipients.push(recipient);
                b"250 ok\r\n"
            }
        } else if upper == "DATA" && recipients.is_empty() {
            b"554 5.5.1 no valid recipients\r\n"
        } else if upper == "DATA" {
            writer.write_all(b"354 go ahead\r\n")?;
            let mut data = String::new();
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line)? == 0 {
                    return Ok(());
                }
                if line.trim_end() == "." {
                    break;
                }
                data.push_str(line.strip_prefix('.').unwrap_or(&line));
            }
            std::thread::sleep(behaviour.per_message);
            if let Ok(mut list) = received.lock() {
                list.push(Received {
                    sender: sender.clone(),
                    recipients: recipients.clone(),
                    data,
                    at: Instant::now(),
                });
            }
            b"250 queued\r\n"
        } else if upper == "RSET" {
            recipients.clear();
            b"250 ok\r\n"
        } else if upper == "QUIT" {
            writer.write_all(b"221 bye\r\n")?;
            return Ok(());
        } else {
            b"502 not implemented\r\n"
        };
        writer.write_all(answer)?;
    }
}

/// Tries every known way of sneaking mail for someone else through a relay for `domain`
/// (whose one known user is alice) named `own_name`, each with a sender and with the null
/// sender. Returns how many RCPTs were tried and the ones not refused, described.
pub fn relay_tricks(smtp: SocketAddr, domain: &str, own_name: &str) -> (usize, Vec<String>) {
    let d = domain;
    let tricks = [
        ("percent hack", format!("someone%elsewhere.test@{d}")),
        (
            "percent hack, known user",
            format!("alice%elsewhere.test@{d}"),
        ),
        ("source route", format!("@{d}:someone@elsewhere.test")),
        (
            "source route, two hops",
            format!("@{d},@mx.{d}:someone@elsewhere.test"),
        ),
        ("bang path", format!("elsewhere.test!someone@{d}")),
        ("bang path, bare", "elsewhere.test!someone".into()),
        (
            "quoted local part with @",
            format!("\"someone@elsewhere.test\"@{d}"),
        ),
        (
            "quoted local part with %",
            format!("\"someone%elsewhere.test\"@{d}"),
        ),
        ("quoted known user", "\"alice\"@elsewhere.test".into()),
        ("IP literal", "someone@[127.0.0.1]".into()),
        (
            "IP literal of the relay",
            format!("postmaster@[{}]", smtp.ip()),
        ),
        ("IPv6 literal", "someone@[IPv6:::1]".into()),
        ("trailing dot, foreign", "someone@elsewhere.test.".into()),
        ("upper case foreign", "SOMEONE@ELSEWHERE.TEST".into()),
        ("unmanaged subdomain", format!("alice@sub.{d}")),
        (
            "unmanaged parent",
            format!(
                "alice@{}",
                d.split_once('.').map_or(d, |(_, parent)| parent)
            ),
        ),
        ("suffix look-alike", format!("alice@{d}.elsewhere.test")),
        ("prefix look-alike", format!("alice@x{d}")),
        (
            "unknown user, upper case",
            format!("MALLORY@{}", d.to_uppercase()),
        ),
        ("empty local part", format!("@{d}")),
        ("no domain", "someone".into()),
        ("localhost", "root@localhost".into()),
        ("relay's own name", format!("root@{own_name}")),
        ("null recipient", String::new()),
    ];
    let mut accepted = Vec::new();
    for (trick, recipient) in &tricks {
        for sender in ["sender@client.test", ""] {
            match rcpt_reply(smtp, sender, recipient) {
                Ok(reply) if reply.code < 400 => accepted.push(format!(
                    "{trick} ({recipient:?}, sender {sender:?}): {reply}"
                )),
                Ok(_) => {}
                Err(error) => accepted.push(format!(
                    "{trick} ({recipient:?}, sender {sender:?}): no answer ({error})"
                )),
            }
        }
    }
    (tricks.len() * 2, accepted)
}

/// A server that accepts connections and never answers, until dropped: a source (LDAP,
/// HTTP) that hangs.
pub struct Silent {
    pub address: std::net::SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Silent {
    pub async fn start() -> io::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let task = tokio::spawn(async move {
            let mut held = vec![];
            while let Ok((socket, _)) = listener.accept().await {
                held.push(socket);
            }
        });
        Ok(Self { address, task })
    }
}

impl Drop for Silent {
    fn drop(&mut self) {
        self.task.abort();
    }
}
