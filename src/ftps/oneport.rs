//! One port (`ftps.passive_ports = "same"`): passive replies name the control port itself,
//! so data connections arrive on the same listener as new control connections, and the
//! front tells them apart.
//!
//! What the clients do (curl, Python's ftplib, lftp, `fwdist fetch`): the data socket is
//! connected as soon as the `227`/`229` is read; its TLS ClientHello comes at once or only
//! once the transfer's `150` is out (curl, ftplib and `fetch` do the latter). A control
//! client never speaks first: it waits for the `220`. So:
//!
//! - a client address has **at most one outstanding offer** on the shared port: a `PASV`
//!   from a second session behind the same NAT address waits (up to
//!   [`super::ports::QUEUE_WAIT`], as the range's pool queues) for the address's turn. So a
//!   connection from that address can only be that offer's data connection or a new control
//!   client.
//! - A new connection from an address with an outstanding offer is **held**
//!   ([`Held::classify`]). If its first byte is a TLS handshake record (`0x16`) it is the
//!   data connection and goes to the offer's data task ([`super::data`]), which still demands
//!   that it resume the session's TLS session. If it stays silent until the offer ends
//!   (bound, expired, withdrawn), or for a window after the offer's `150` (sized from the
//!   control connection's round-trip time, capped: [`window`]), or if it sends anything
//!   else, it is a control client and gets its greeting (the per-address and server-wide
//!   limits apply then).
//! - The address's turn ends when the offer's data connection is **identified** (its
//!   ClientHello came), not when it is bound: the next offer may be made while the
//!   handshake runs, a round trip sooner. Until it is, later ClientHellos still go to this
//!   offer, so a stranger's that came first cannot shut the IQ's out; once it is, they go to
//!   the newer offer, where resumption refuses the wrong one (a retry for the IQ, never a
//!   crossed transfer). Connections held for the earlier offer stay with it: none of them
//!   can be the data connection of an offer announced after they connected.
//! - A connection from an address without an outstanding offer is a control client, greeted
//!   at once, as with a separate range.
//!
//! Held connections are bounded per address ([`HELD_PER_ADDRESS`]) and in all (the session
//! cap), and a hold ends after [`HOLD_MAX`] whatever happens.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::sync::{Notify, mpsc, watch};
use tokio::time::Instant;

/// How far an offer has come, as the connections held for it see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// `227`/`229` sent; no transfer command yet.
    Offered,
    /// The transfer's `150` is out: a data connection that will speak, speaks within
    /// `window`.
    Started { at: Instant, window: Duration },
    /// Bound, expired or withdrawn: whoever is still held is a control client.
    Over,
}

/// Connections held at once for one client address.
pub const HELD_PER_ADDRESS: usize = 64;
/// The longest a connection is held, whatever the offer does.
pub const HOLD_MAX: Duration = Duration::from_secs(20);
/// The smallest window after the `150` (scheduling on a loaded host, a slow client library).
pub const WINDOW_MIN: Duration = Duration::from_millis(500);
/// The largest.
pub const WINDOW_MAX: Duration = Duration::from_secs(3);
/// Data connections queued for an offer's data task (as many as it handshakes at once).
const TO_DATA: usize = 4;

/// Pure: the window after the `150` in which a held connection must send its ClientHello to
/// be the data connection: the client reads the `150` and answers, one round trip, plus slack
/// for a loaded host; four round trips on top, capped.
pub fn window(rtt: Option<Duration>) -> Duration {
    let rtt = rtt.unwrap_or(Duration::from_millis(100));
    (WINDOW_MIN + rtt.saturating_mul(4)).min(WINDOW_MAX)
}

/// The shared port's outstanding offers, one per client address.
pub struct OnePort {
    /// The port passive replies announce: the control port as IQs see it.
    pub port: u16,
    offers: Mutex<HashMap<IpAddr, Entry>>,
    /// Signalled whenever an offer ends.
    freed: Notify,
    in_use: prometheus::IntGauge,
    next_id: AtomicU64,
    held_total: Arc<AtomicUsize>,
    held_cap: usize,
}

impl std::fmt::Debug for OnePort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "OnePort({})", self.port)
    }
}

#[derive(Clone)]
struct Entry {
    id: u64,
    to_data: mpsc::Sender<TcpStream>,
    phase: watch::Receiver<Phase>,
    /// Its data connection was identified: the address's next offer may replace this entry;
    /// until one does, further ClientHellos still come here (a stranger's first one cannot
    /// shut the IQ's own out).
    turn_over: Arc<AtomicBool>,
    held: Arc<AtomicUsize>,
}

/// An offer on the shared port, held by its session's data task; ends when dropped.
pub struct SharedOffer {
    port: Arc<OnePort>,
    ip: IpAddr,
    id: u64,
    phase: Arc<watch::Sender<Phase>>,
    from_front: mpsc::Receiver<TcpStream>,
}

impl std::fmt::Debug for SharedOffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SharedOffer({} for {})", self.id, self.ip)
    }
}

/// Lets the control relay say that the offer's transfer has begun (its `150` is out).
#[derive(Clone)]
pub struct StartMarker(Arc<watch::Sender<Phase>>);

impl StartMarker {
    pub fn started(&self, window: Duration) {
        self.0.send_if_modified(|p| {
            let first = *p == Phase::Offered;
            if first {
                *p = Phase::Started {
                    at: Instant::now(),
                    window,
                };
            }
            first
        });
    }
}

impl SharedOffer {
    /// The next connection the front classified as this offer's data connection.
    pub async fn accept(&mut self) -> Option<TcpStream> {
        self.from_front.recv().await
    }

    pub fn marker(&self) -> StartMarker {
        StartMarker(self.phase.clone())
    }
}

impl Drop for SharedOffer {
    fn drop(&mut self) {
        self.phase.send_replace(Phase::Over);
        self.port.end_turn(self.ip, self.id);
    }
}

/// A connection held for an offer; its slot is given back when dropped.
pub struct Held {
    port: Arc<OnePort>,
    entry: Entry,
    total: Arc<AtomicUsize>,
}

impl Drop for Held {
    fn drop(&mut self) {
        self.entry.held.fetch_sub(1, Ordering::Relaxed);
        self.total.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What a held connection turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// It sent a TLS handshake record while the offer was open: the data connection.
    Data,
    /// Silent past the offer or its window, or it spoke first in plain text.
    Control,
    /// It closed or failed before it said anything.
    Gone,
}

impl Verdict {
    /// The `as` label of `fwdist_oneport_held_total`.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Data => "data",
            Verdict::Control => "control",
            Verdict::Gone => "gone",
        }
    }
}

impl OnePort {
    /// `held_cap`: connections held at once in all (the session cap is a good bound).
    pub fn new(port: u16, held_cap: usize, in_use: prometheus::IntGauge) -> Arc<Self> {
        Arc::new(OnePort {
            port,
            offers: Mutex::new(HashMap::new()),
            freed: Notify::new(),
            in_use,
            next_id: AtomicU64::new(1),
            held_total: Arc::new(AtomicUsize::new(0)),
            held_cap: held_cap.max(HELD_PER_ADDRESS),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Entry>> {
        self.offers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Offers outstanding now.
    pub fn outstanding(&self) -> usize {
        self.lock().len()
    }

    /// The offer for `client`, once no other offer of that address is outstanding, waiting up
    /// to `wait`; `None` after that.
    pub async fn claim(self: &Arc<Self>, client: IpAddr, wait: Duration) -> Option<SharedOffer> {
        let deadline = Instant::now() + wait;
        loop {
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            if let Some(o) = self.try_claim(client) {
                return Some(o);
            }
            if tokio::time::timeout_at(deadline, freed).await.is_err() {
                return None;
            }
        }
    }

    fn try_claim(self: &Arc<Self>, client: IpAddr) -> Option<SharedOffer> {
        let mut g = self.lock();
        if g.get(&client)
            .is_some_and(|e| !e.turn_over.load(Ordering::Relaxed))
        {
            return None;
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (to_data, from_front) = mpsc::channel(TO_DATA);
        let (phase, rx) = watch::channel(Phase::Offered);
        let phase = Arc::new(phase);
        g.insert(
            client,
            Entry {
                id,
                to_data,
                phase: rx,
                turn_over: Arc::new(AtomicBool::new(false)),
                held: Arc::new(AtomicUsize::new(0)),
            },
        );
        self.in_use.set(i64::try_from(g.len()).unwrap_or(i64::MAX));
        Some(SharedOffer {
            port: self.clone(),
            ip: client,
            id,
            phase,
            from_front,
        })
    }

    /// The offer ended: its entry goes (unless a newer offer of the address replaced it).
    fn end_turn(&self, ip: IpAddr, id: u64) {
        let mut g = self.lock();
        if g.get(&ip).is_some_and(|e| e.id == id) {
            g.remove(&ip);
        }
        self.in_use.set(i64::try_from(g.len()).unwrap_or(i64::MAX));
        drop(g);
        self.freed.notify_waiters();
    }

    /// For the accept loop: a connection from `ip` is held when that address has an
    /// outstanding offer (and the holds are not all taken); `None` means "a control client".
    pub fn hold(self: &Arc<Self>, ip: IpAddr) -> Option<Held> {
        let entry = self.lock().get(&ip)?.clone();
        if entry.held.fetch_add(1, Ordering::Relaxed) >= HELD_PER_ADDRESS {
            entry.held.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        if self.held_total.fetch_add(1, Ordering::Relaxed) >= self.held_cap {
            self.held_total.fetch_sub(1, Ordering::Relaxed);
            entry.held.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        Some(Held {
            port: self.clone(),
            entry,
            total: self.held_total.clone(),
        })
    }
}

impl Held {
    /// Watches a held connection until it is known what it is (see the module header).
    pub async fn classify(&mut self, stream: &TcpStream) -> Verdict {
        let hard = Instant::now() + HOLD_MAX;
        let mut first = [0u8; 1];
        loop {
            let until = match *self.entry.phase.borrow_and_update() {
                Phase::Over => return Verdict::Control,
                Phase::Offered => hard,
                Phase::Started { at, window } => (at + window).min(hard),
            };
            tokio::select! {
                r = stream.peek(&mut first) => return match r {
                    Ok(0) | Err(_) => Verdict::Gone,
                    Ok(_) if first[0] == 0x16 => Verdict::Data,
                    Ok(_) => Verdict::Control,
                },
                r = self.entry.phase.changed() => if r.is_err() {
                    return Verdict::Control;
                },
                () = tokio::time::sleep_until(until) => return Verdict::Control,
            }
        }
    }

    /// Gives a data connection to the offer's data task (dropped when the offer is over or
    /// already has as many as it handshakes) and ends the address's turn: the connection is
    /// identified, so whoever else is held is a control client, and the next offer of the
    /// address may be made while this one's TLS handshake runs (which still binds it to its
    /// session, or refuses it).
    pub fn hand_over(self, stream: TcpStream) -> bool {
        let handed = self.entry.to_data.try_send(stream).is_ok();
        if handed && !self.entry.turn_over.swap(true, Ordering::Relaxed) {
            self.port.freed.notify_waiters();
        }
        handed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt as _;
    use tokio::net::TcpListener;

    fn gauge() -> prometheus::IntGauge {
        prometheus::IntGauge::new("t", "t").unwrap()
    }

    #[test]
    fn the_window_grows_with_the_round_trip_and_is_capped() {
        assert_eq!(window(Some(Duration::ZERO)), WINDOW_MIN);
        assert_eq!(
            window(Some(Duration::from_millis(50))),
            WINDOW_MIN + Duration::from_millis(200)
        );
        assert_eq!(window(Some(Duration::from_secs(10))), WINDOW_MAX);
        assert!(window(None) > WINDOW_MIN && window(None) < WINDOW_MAX);
    }

    #[tokio::test]
    async fn one_offer_per_address_others_wait_and_other_addresses_do_not() {
        let one = OnePort::new(2121, 16, gauge());
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let first = one.claim(a, Duration::ZERO).await.expect("the first offer");
        assert!(
            one.claim(a, Duration::ZERO).await.is_none(),
            "a second offer of that address waits"
        );
        let _other = one
            .claim(b, Duration::ZERO)
            .await
            .expect("another address is not held up");
        assert_eq!(one.outstanding(), 2);
        let waiting = {
            let one = one.clone();
            tokio::spawn(async move { one.claim(a, Duration::from_secs(30)).await.is_some() })
        };
        tokio::task::yield_now().await;
        drop(first);
        assert!(
            waiting.await.unwrap(),
            "the waiting offer gets the address once the first ends"
        );
    }

    #[tokio::test]
    async fn no_hold_without_an_offer_and_holds_are_capped_per_address() {
        let one = OnePort::new(2121, 16, gauge());
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        assert!(one.hold(a).is_none(), "no offer: a control client");
        let _o = one.claim(a, Duration::ZERO).await.unwrap();
        let held: Vec<_> = (0..HELD_PER_ADDRESS)
            .map(|_| one.hold(a).expect("a hold"))
            .collect();
        assert!(one.hold(a).is_none(), "past the cap a connection is not held");
        drop(held);
        assert!(one.hold(a).is_some(), "holds are given back");
    }

    async fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let c = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (s, _) = l.accept().await.unwrap();
        (c, s)
    }

    #[tokio::test]
    async fn a_client_hello_is_the_data_connection_and_plain_text_is_a_control_client() {
        let one = OnePort::new(2121, 16, gauge());
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let mut offer = one.claim(ip, Duration::ZERO).await.unwrap();

        let (mut c, s) = pair().await;
        let mut h = one.hold(ip).unwrap();
        c.write_all(&[0x16, 0x03, 0x01]).await.unwrap();
        assert_eq!(h.classify(&s).await, Verdict::Data);
        assert!(h.hand_over(s));
        let got = offer.accept().await.expect("handed to the data task");
        let mut b = [0u8; 3];
        assert_eq!(got.peek(&mut b).await.unwrap(), 3, "nothing was consumed");
        assert_eq!(b, [0x16, 0x03, 0x01]);
        // Identified: the address's turn is over while the handshake runs. Until another
        // offer comes, a second ClientHello still reaches this one (the first may have been
        // a stranger's).
        let (mut c2, s2) = pair().await;
        let mut h = one.hold(ip).expect("held for the identified offer");
        c2.write_all(&[0x16]).await.unwrap();
        assert_eq!(h.classify(&s2).await, Verdict::Data);
        assert!(h.hand_over(s2));
        assert!(offer.accept().await.is_some());
        let _next = one
            .claim(ip, Duration::ZERO)
            .await
            .expect("the next offer of the address at once");

        let (mut c, s) = pair().await;
        let mut h = one.hold(ip).unwrap();
        c.write_all(b"USER x\r\n").await.unwrap();
        assert_eq!(h.classify(&s).await, Verdict::Control);

        let (c, s) = pair().await;
        let mut h = one.hold(ip).unwrap();
        drop(c);
        assert_eq!(h.classify(&s).await, Verdict::Gone);
    }

    #[tokio::test]
    async fn a_silent_connection_is_a_control_client_once_the_offer_ends() {
        let one = OnePort::new(2121, 16, gauge());
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let offer = one.claim(ip, Duration::ZERO).await.unwrap();
        let (_c, s) = pair().await;
        let mut h = one.hold(ip).unwrap();
        let watching = tokio::spawn(async move { (h.classify(&s).await, h) });
        tokio::task::yield_now().await;
        drop(offer);
        let (verdict, h) = watching.await.unwrap();
        assert_eq!(verdict, Verdict::Control);
        let (_c2, s2) = pair().await;
        assert!(!h.hand_over(s2), "nothing is handed to an offer that is over");
        assert_eq!(one.outstanding(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_connection_is_a_control_client_after_the_window() {
        let one = OnePort::new(2121, 16, gauge());
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let offer = one.claim(ip, Duration::ZERO).await.unwrap();
        let (_c, s) = pair().await;
        let mut h = one.hold(ip).unwrap();
        let began = Instant::now();
        let marker = offer.marker();
        let watching = tokio::spawn(async move { h.classify(&s).await });
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(
            !watching.is_finished(),
            "before the 150 a silent connection is held"
        );
        marker.started(Duration::from_secs(1));
        assert_eq!(watching.await.unwrap(), Verdict::Control);
        assert!(began.elapsed() >= Duration::from_secs(6));
        drop(offer);
    }
}
