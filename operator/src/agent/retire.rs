//! A replica that a scale-in removes: it takes no new mail (it is not ready, so it leaves
//! the Services' endpoints), delivers its queue, and says once it holds nothing, so that
//! the operator removes it without stranding mail on its volume.

use super::EMPTY_READS_TO_DRAIN;
use std::time::{Duration, Instant};

/// How soon a retiring replica with mail asks Postfix again to retry all of it: deferred
/// mail would otherwise wait for its backoff (up to an hour) after the primary is back.
const FLUSH_INTERVAL: Duration = Duration::from_secs(30);

/// The longest wait between two such retries: while the queue does not shrink, each wait
/// doubles up to this, so a primary that stays down is not asked for every message every
/// 30 s, and mail still goes within minutes of its return.
const MAX_FLUSH_INTERVAL: Duration = Duration::from_secs(300);

/// How long a replica retires before an empty queue lets it go. Once it is not ready, its
/// pod leaves the endpoints within seconds (readiness every 2 s, three failures), but a
/// connection opened before that, or routed by a load balancer that lags, may still bring
/// a message: it lands in the queue within this time, and is delivered before the replica
/// goes.
pub const SETTLE: Duration = Duration::from_secs(60);

/// The replica's ordinal: `edge-2` of gateway `edge` is 2.
pub fn ordinal(replica: &str, gateway: &str) -> Option<u32> {
    replica
        .strip_prefix(gateway)?
        .strip_prefix('-')?
        .parse()
        .ok()
}

/// What a retiring replica's `/status` says.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Retirement {
    /// Messages in the queue at the last read.
    pub queued: u64,
    /// SMTP sessions open at the last read (an agent before 0.2 does not say: 0).
    #[serde(default)]
    pub sessions: u64,
    /// Whether the last reads found the queue empty and no session open: the replica may go.
    pub delivered: bool,
}

#[derive(Debug)]
pub struct Retiring {
    since: Instant,
    empty_reads: u8,
    /// When the queue was last flushed, and how many messages it held then.
    last_flush: Option<(Instant, u64)>,
    /// The wait before the next flush.
    flush_interval: Duration,
}

impl Retiring {
    pub fn since(now: Instant) -> Self {
        Self {
            since: now,
            empty_reads: 0,
            last_flush: None,
            flush_interval: FLUSH_INTERVAL,
        }
    }

    /// Counts a read that found `queued` messages and `sessions` open SMTP sessions; true
    /// when the queue should be flushed now.
    pub fn read(&mut self, queued: u64, sessions: u64, now: Instant) -> bool {
        if queued == 0 && sessions == 0 {
            // One empty read proves little: `showq` skips a message the queue manager moves.
            self.empty_reads = self.empty_reads.saturating_add(1);
            return false;
        }
        self.empty_reads = 0;
        if queued == 0 {
            return false;
        }
        if let Some((last, before)) = self.last_flush {
            if now.duration_since(last) < self.flush_interval {
                return false;
            }
            // The last flush delivered nothing: the primary is likely still down.
            self.flush_interval = if queued < before {
                FLUSH_INTERVAL
            } else {
                (self.flush_interval * 2).min(MAX_FLUSH_INTERVAL)
            };
        }
        self.last_flush = Some((now, queued));
        true
    }

    pub fn report(&self, queued: u64, sessions: u64, now: Instant) -> Retirement {
        Retirement {
            queued,
            sessions,
            delivered: self.empty_reads >= EMPTY_READS_TO_DRAIN
                && now.duration_since(self.since) >= SETTLE,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ordinal_follows_the_gateways_name() {
        assert_eq!(ordinal("edge-2", "edge"), Some(2));
        assert_eq!(ordinal("edge-west-10", "edge-west"), Some(10));
        assert_eq!(ordinal("edge-west-1", "edge"), None);
        assert_eq!(ordinal("edge", "edge"), None);
        assert_eq!(ordinal("other-0", "edge"), None);
    }

    #[test]
    fn mail_is_flushed_at_once_then_every_interval_and_two_empty_reads_release_the_replica() {
        let start = Instant::now();
        let mut retiring = Retiring::since(start);
        assert_eq!(retiring.report(0, 0, start), Retirement::default());
        assert!(retiring.read(2, 0, start));
        assert!(!retiring.read(2, 0, start + Duration::from_secs(10)));
        assert!(retiring.read(1, 0, start + FLUSH_INTERVAL));
        assert!(!retiring.read(0, 0, start + FLUSH_INTERVAL));
        let later = start + SETTLE;
        assert!(!retiring.report(0, 0, later).delivered);
        // Mail seen again starts the count over.
        retiring.read(1, 0, start + FLUSH_INTERVAL);
        retiring.read(0, 0, start + FLUSH_INTERVAL);
        retiring.read(0, 0, start + FLUSH_INTERVAL);
        assert_eq!(
            retiring.report(0, 0, later),
            Retirement {
                queued: 0,
                sessions: 0,
                delivered: true
            }
        );
    }

    #[test]
    fn flushes_that_deliver_nothing_come_ever_more_rarely() {
        let start = Instant::now();
        let mut retiring = Retiring::since(start);
        let mut flushed_at = vec![];
        // The primary stays down: 5 messages, read every 10 s for an hour.
        for second in (0..3_600).step_by(10) {
            if retiring.read(5, 0, start + Duration::from_secs(second)) {
                flushed_at.push(second);
            }
        }
        assert_eq!(
            flushed_at[..7],
            [0, 30, 90, 210, 450, 750, 1050],
            "{flushed_at:?}"
        );
        // Mail going out again: the next flush is at the usual interval.
        let last = start + Duration::from_secs(*flushed_at.last().unwrap());
        assert!(retiring.read(4, 0, last + MAX_FLUSH_INTERVAL));
        assert!(!retiring.read(4, 0, last + MAX_FLUSH_INTERVAL + FLUSH_INTERVAL / 2));
        assert!(retiring.read(3, 0, last + MAX_FLUSH_INTERVAL + FLUSH_INTERVAL));
    }

    #[test]
    fn an_empty_queue_lets_the_replica_go_only_once_it_has_settled() {
        let start = Instant::now();
        let mut retiring = Retiring::since(start);
        retiring.read(0, 0, start);
        retiring.read(0, 0, start + Duration::from_secs(15));
        let early = start + SETTLE - Duration::from_secs(1);
        assert!(!retiring.report(0, 0, early).delivered);
        assert!(retiring.report(0, 0, start + SETTLE).delivered);
    }

    #[test]
    fn an_open_session_holds_the_replica_however_long_it_lasts() {
        let start = Instant::now();
        let mut retiring = Retiring::since(start);
        let late = start + 10 * SETTLE;
        // Nothing queued, so nothing to flush, but a client may still be sending.
        assert!(!retiring.read(0, 1, start));
        assert!(!retiring.read(0, 1, late));
        assert_eq!(
            retiring.report(0, 1, late),
            Retirement {
                queued: 0,
                sessions: 1,
                delivered: false
            }
        );
        // Once it ends, two empty reads are needed again: its message may be on its way
        // into the queue.
        retiring.read(0, 0, late);
        assert!(!retiring.report(0, 0, late).delivered);
        retiring.read(0, 0, late);
        assert!(retiring.report(0, 0, late).delivered);
    }
}
