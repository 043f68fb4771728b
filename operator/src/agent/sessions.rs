//! Open SMTP sessions: connections to this replica's SMTP port, as the kernel lists them
//! for its network namespace (the pod's). A retiring replica goes only when none is open:
//! a client may be sending a message that reaches the queue after an empty read of it.

use std::io;

/// The kernel's TCP tables, IPv4 and IPv6.
const TABLES: [&str; 2] = ["/proc/net/tcp", "/proc/net/tcp6"];

/// `st` values of a connection that is, or is about to become, a session: ESTABLISHED and
/// SYN_RECV (the handshake is under way; smtpd accepts it next).
const OPEN_STATES: [&str; 2] = ["01", "03"];

/// Connections to local `port` in the kernel's tables. A table that does not exist (no
/// IPv6 in the namespace) counts none.
pub async fn open(port: u16) -> io::Result<u64> {
    let mut sessions = 0;
    for table in TABLES {
        match tokio::fs::read_to_string(table).await {
            Ok(text) => sessions += count(&text, port),
            Err(error) if error.kind() == io::ErrorKind::NotFound => {}
            Err(error) => return Err(io::Error::new(error.kind(), format!("{table}: {error}"))),
        }
    }
    Ok(sessions)
}

/// Rows of a `/proc/net/tcp{,6}` table whose local port is `port` and whose state is open.
/// A row: `0: 0100007F:0019 0100007F:D4A2 01 …` (local address, remote address, state).
fn count(table: &str, port: u16) -> u64 {
    let port = format!("{port:04X}");
    let open = table.lines().skip(1).filter(|row| {
        let mut fields = row.split_whitespace().skip(1);
        let local_port = fields
            .next()
            .and_then(|local| local.rsplit_once(':'))
            .map(|(_, port)| port);
        let state = fields.nth(1);
        local_port == Some(port.as_str()) && state.is_some_and(|st| OPEN_STATES.contains(&st))
    });
    open.count() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n";

    #[test]
    fn only_open_connections_to_the_smtp_port_count() {
        let table = format!(
            "{HEADER}\
             0: 00000000:0019 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0\n\
             1: 0A000105:0019 0A000001:D4A2 01 00000000:00000000 00:00000000 00000000     0        0 2 1 0 20 4 30 10 -1\n\
             2: 0A000105:0019 0A000002:A001 03 00000000:00000000 00:00000000 00000000     0        0 3 1 0 20 4 30 10 -1\n\
             3: 0A000105:0019 0A000003:A002 06 00000000:00000000 00:00000000 00000000     0        0 0 1 0 20 4 30 10 -1\n\
             4: 0A000105:C350 0A000009:0019 01 00000000:00000000 00:00000000 00000000     0        0 4 1 0 20 4 30 10 -1\n\
             5: 0A000105:1F90 0A000001:D4A3 01 00000000:00000000 00:00000000 00000000     0        0 5 1 0 20 4 30 10 -1\n"
        );
        // The listener (0A), a closed connection (06, TIME_WAIT), Postfix's own delivery
        // to a primary's port 25 and the agent's port 8080 do not count.
        assert_eq!(count(&table, 25), 2);
        assert_eq!(count(&table, 8080), 1);
        assert_eq!(count(&table, 2525), 0);
        assert_eq!(count(HEADER, 25), 0);
    }

    #[test]
    fn ipv6_rows_count_alike() {
        let table = format!(
            "{HEADER}\
             0: 00000000000000000000000001000000:09DD 00000000000000000000000001000000:E1F2 01 00000000:00000000 00:00000000 00000000     0        0 7 1 0 20 4 30 10 -1\n"
        );
        assert_eq!(count(&table, 2525), 1);
    }

    #[tokio::test]
    async fn a_connection_to_a_local_listener_is_seen_until_it_closes() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        assert_eq!(open(port).await.unwrap(), 0);
        let client = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        assert_eq!(open(port).await.unwrap(), 1);
        drop(client);
        drop(server);
        assert_eq!(open(port).await.unwrap(), 0);
    }
}
