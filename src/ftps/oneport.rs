//! One port (`ftps.passive_ports = "same"`): passive replies name the control port itself,
//! so data connections arrive on the same listener as new control connections, and the
//! front tells them apart.
//!
//! What the clients do (curl, Python's ftplib, lftp, `fwdist fetch`): the data socket is
//! connected as soon as the `227`/`229` is read; its TLS ClientHello comes at once or only
//! once the transfer's `150` is out (curl, ftplib and `fetch` do the latter). A control
//! client never speaks first: it waits for the `220`. So:
//!
//! - A new connection from an address with offers outstanding is **held**
//!   ([`Held::classify`]). If its first byte is a TLS handshake record (`0x16`) it is a data
//!   connection. If it stays silent until every offer that was outstanding when it connected
//!   has ended (bound to its data connection, or expired `data_connect_timeout_secs` after
//!   the `227` like any offer), or if it sends anything else first, it is a control client
//!   and gets its greeting (the per-address and server-wide limits apply then). An offer made
//!   after it connected cannot be its own. There is no shorter window: a data connection
//!   gets the whole of its offer's time to start TLS, as on a separate range (a window of
//!   2 s + 4 round trips after the `150` greeted 71 of 800 slow data connections as control
//!   clients through `bench/nat.sh`'s loaded NAT at 100 IQs and 50 ms; their updates then
//!   needed a retry), and a control client waits at most that long.
//! - A data connection goes to **the session it resumes**: the front reads its ClientHello
//!   ([`super::hello`]) and gives it to the offer whose session issued the TLS session it
//!   names (a TLS 1.2 session id, a TLS 1.3 ticket; fwdist resumes statefully, so both are
//!   keys in that session's own cache, [`super::tls::SessionKeys`]). One naming none of them
//!   goes to the address's oldest offer. Either way the offer's data task
//!   ([`super::data`]) runs the handshake and still demands the resumption, so two sessions
//!   behind one NAT address are never crossed, and many of them can have offers out at once
//!   (the issue first asked for one offer per address at a time: measured with
//!   `bench/nat.sh`, that served 100 IQs behind one address at 50 ms round trip at 0.02 of
//!   a separate range's rate, and 210 of 800 updates failed after 30 retries).
//! - A connection from an address without an outstanding offer is a control client, greeted
//!   at once, as with a separate range.
//!
//! Held connections are bounded per address ([`HELD_PER_ADDRESS`]) and in all (the session
//! cap), a hold ends after [`HOLD_MAX`] whatever happens, and a ClientHello must arrive
//! whole within [`HELLO_WAIT`].

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::AsyncReadExt as _;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::hello;
use super::tls::SessionKeys;

/// Whether an offer is still open, as the connections held for it see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// `227`/`229` sent; no data connection bound yet.
    Open,
    /// Bound, expired or withdrawn.
    Over,
}

/// Connections held at once for one client address, at least (see [`OnePort::new`]).
pub const HELD_PER_ADDRESS: usize = 64;
/// The longest a connection is held, whatever the offers do.
pub const HOLD_MAX: Duration = Duration::from_secs(20);
/// From a data connection's first byte to its whole ClientHello.
pub const HELLO_WAIT: Duration = Duration::from_secs(5);
/// Data connections queued for an offer's data task (as many as it handshakes at once).
const TO_DATA: usize = 4;

/// A data connection for an offer's data task: the stream and the ClientHello already read
/// from it.
#[derive(Debug)]
pub struct Arrival {
    pub stream: TcpStream,
    pub prefix: Vec<u8>,
    /// The client's address (with PROXY protocol, the one its header named).
    pub from: IpAddr,
}

/// The shared port's outstanding offers, by client address.
pub struct OnePort {
    /// The port passive replies announce: the control port as IQs see it.
    pub port: u16,
    addresses: Mutex<HashMap<IpAddr, Address>>,
    in_use: prometheus::IntGauge,
    next_id: AtomicU64,
    held_total: AtomicUsize,
    held_cap: usize,
    per_address: usize,
}

impl std::fmt::Debug for OnePort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "OnePort({})", self.port)
    }
}

#[derive(Default)]
struct Address {
    /// Oldest first.
    offers: Vec<Entry>,
    held: usize,
}

#[derive(Clone)]
struct Entry {
    id: u64,
    to_data: mpsc::Sender<Arrival>,
    phase: watch::Receiver<Phase>,
    keys: SessionKeys,
}

/// An offer on the shared port, held by its session's data task; ends when dropped.
pub struct SharedOffer {
    port: Arc<OnePort>,
    ip: IpAddr,
    id: u64,
    phase: Arc<watch::Sender<Phase>>,
    from_front: mpsc::Receiver<Arrival>,
}

impl std::fmt::Debug for SharedOffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SharedOffer({} for {})", self.id, self.ip)
    }
}

impl SharedOffer {
    /// The next connection the front gave this offer.
    pub async fn accept(&mut self) -> Option<Arrival> {
        self.from_front.recv().await
    }
}

impl Drop for SharedOffer {
    fn drop(&mut self) {
        self.phase.send_replace(Phase::Over);
        let mut g = self.port.lock();
        if let Some(a) = g.get_mut(&self.ip) {
            a.offers.retain(|e| e.id != self.id);
            if a.offers.is_empty() && a.held == 0 {
                g.remove(&self.ip);
            }
        }
        self.port.set_gauge(&g);
    }
}

/// A connection held because its address had offers outstanding; its slot is given back
/// when dropped.
pub struct Held {
    port: Arc<OnePort>,
    ip: IpAddr,
    /// The offers outstanding when it connected: the only ones it can belong to.
    offers: Vec<Entry>,
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut g = self.port.lock();
        if let Some(a) = g.get_mut(&self.ip) {
            a.held = a.held.saturating_sub(1);
            if a.offers.is_empty() && a.held == 0 {
                g.remove(&self.ip);
            }
        }
        drop(g);
        self.port.held_total.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What a held connection turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// It sent a TLS handshake record while an offer was open: a data connection.
    Data,
    /// Silent until the offers ended, or it spoke first in plain text.
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
    /// `held_cap`: connections held at once in all (the session cap is a good bound);
    /// `per_address`: for one address (at least [`HELD_PER_ADDRESS`]). A connection past
    /// either is greeted as a control client, so a data connection turned away there fails
    /// its transfer: the caps must leave room for every session an address may have (one
    /// data connection each) and its new control connections (measured: 64 per address
    /// failed 301 of 800 updates of 100 IQs behind one address, nothing limiting them per
    /// address).
    pub fn new(port: u16, held_cap: usize, per_address: usize, in_use: prometheus::IntGauge) -> Arc<Self> {
        Arc::new(OnePort {
            port,
            addresses: Mutex::new(HashMap::new()),
            in_use,
            next_id: AtomicU64::new(1),
            held_total: AtomicUsize::new(0),
            held_cap: held_cap.max(HELD_PER_ADDRESS),
            per_address: per_address.clamp(HELD_PER_ADDRESS, held_cap.max(HELD_PER_ADDRESS)),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Address>> {
        self.addresses
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn set_gauge(&self, g: &HashMap<IpAddr, Address>) {
        let n: usize = g.values().map(|a| a.offers.len()).sum();
        self.in_use.set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// Offers outstanding now.
    pub fn outstanding(&self) -> usize {
        self.lock().values().map(|a| a.offers.len()).sum()
    }

    /// An offer for a session of `client` whose data connections resume a session `keys`
    /// know. Never waits: offers of one address are told apart by those keys.
    pub fn claim(self: &Arc<Self>, client: IpAddr, keys: SessionKeys) -> SharedOffer {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (to_data, from_front) = mpsc::channel(TO_DATA);
        let (phase, rx) = watch::channel(Phase::Open);
        let mut g = self.lock();
        g.entry(client).or_default().offers.push(Entry {
            id,
            to_data,
            phase: rx,
            keys,
        });
        self.set_gauge(&g);
        SharedOffer {
            port: self.clone(),
            ip: client,
            id,
            phase: Arc::new(phase),
            from_front,
        }
    }

    /// For the accept loop: a connection from `ip` is held when that address has offers
    /// outstanding (and the holds are not all taken); `None` means "a control client".
    pub fn hold(self: &Arc<Self>, ip: IpAddr) -> Option<Held> {
        let mut g = self.lock();
        let a = g.get_mut(&ip).filter(|a| !a.offers.is_empty())?;
        if a.held >= self.per_address {
            return None;
        }
        if self.held_total.fetch_add(1, Ordering::Relaxed) >= self.held_cap {
            self.held_total.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        a.held += 1;
        Some(Held {
            port: self.clone(),
            ip,
            offers: a.offers.clone(),
        })
    }
}

impl Held {
    /// Watches a held connection until it is known what it is (see the module header).
    pub async fn classify(&mut self, stream: &TcpStream) -> Verdict {
        let hard = Instant::now() + HOLD_MAX;
        let mut first = [0u8; 1];
        loop {
            // Control once every offer it could belong to is over.
            self.offers
                .retain_mut(|e| *e.phase.borrow_and_update() != Phase::Over);
            if self.offers.is_empty() {
                return Verdict::Control;
            }
            let changes =
                futures_util::future::select_all(self.offers.iter_mut().map(|e| Box::pin(e.phase.changed())));
            let gone = tokio::select! {
                r = stream.peek(&mut first) => return match r {
                    Ok(n) => verdict_of(first.get(..n).unwrap_or_default()),
                    Err(_) => Verdict::Gone,
                },
                (r, i, _) = changes => r.is_err().then_some(i),
                () = tokio::time::sleep_until(hard) => return Verdict::Control,
            };
            if let Some(i) = gone {
                // Its offer went without a word: over.
                self.offers.remove(i);
            }
        }
    }

    /// Reads the data connection's ClientHello and gives the connection to the offer whose
    /// session it resumes, else to the oldest offer still open (whose handshake refuses
    /// it); false when no offer took it.
    pub async fn hand_over(self, mut stream: TcpStream) -> bool {
        let Some(prefix) = read_hello(&mut stream).await else {
            return false;
        };
        let ids = hello::identities(&prefix);
        let open = |e: &&Entry| *e.phase.borrow() != Phase::Over;
        let owner = self
            .offers
            .iter()
            .filter(open)
            .find(|e| ids.iter().any(|id| e.keys.knows(id)))
            .or_else(|| self.offers.iter().find(open));
        match owner {
            Some(e) => e
                .to_data
                .try_send(Arrival {
                    stream,
                    prefix,
                    from: self.ip,
                })
                .is_ok(),
            None => false,
        }
    }
}

/// The TLS record a data connection starts with (bounded in size and time, step by step as
/// [`hello::next_read`] says: never past the record, never past [`hello::MAX_RECORD`]);
/// `None` if it does not arrive whole.
async fn read_hello(stream: &mut TcpStream) -> Option<Vec<u8>> {
    let mut buf = Vec::with_capacity(2048);
    let read = async {
        let mut chunk = [0u8; 4096];
        loop {
            let room = match hello::next_read(&buf) {
                hello::Read::Whole(_) => return Some(()),
                hello::Read::Refuse => return None,
                hello::Read::More(n) => n.min(chunk.len()),
            };
            match stream.read(&mut chunk[..room]).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    };
    tokio::time::timeout(HELLO_WAIT, read).await.ok()??;
    Some(buf)
}

/// Pure: what a held connection is, from the bytes a peek at its start returned (empty:
/// it closed). Only the first byte counts, so more bytes never change a verdict.
pub fn verdict_of(peeked: &[u8]) -> Verdict {
    match peeked.first() {
        None => Verdict::Gone,
        Some(&b) if b == hello::HANDSHAKE => Verdict::Data,
        Some(_) => Verdict::Control,
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

    /// A record that starts like a ClientHello and names `id` as its TLS 1.2 session.
    fn hello_naming(id: &[u8]) -> Vec<u8> {
        let mut body = vec![3, 3];
        body.extend_from_slice(&[1; 32]);
        body.push(id.len() as u8);
        body.extend_from_slice(id);
        body.extend_from_slice(&[0, 2, 0x13, 0x01, 1, 0]);
        let mut hs = vec![1];
        hs.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
        hs.extend_from_slice(&body);
        let mut rec = vec![0x16, 3, 1];
        rec.extend_from_slice(&(hs.len() as u16).to_be_bytes());
        rec.extend_from_slice(&hs);
        rec
    }

    async fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let c = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (s, _) = l.accept().await.unwrap();
        (c, s)
    }

    const IP: [u8; 4] = [127, 0, 0, 1];

    #[tokio::test]
    async fn no_hold_without_an_offer_and_holds_are_capped_per_address() {
        let one = OnePort::new(2121, 16, 16, gauge());
        let a = IpAddr::from(IP);
        assert!(one.hold(a).is_none(), "no offer: a control client");
        let _o = one.claim(a, SessionKeys::with(&[]));
        let held: Vec<_> = (0..HELD_PER_ADDRESS)
            .map(|_| one.hold(a).expect("a hold"))
            .collect();
        assert!(one.hold(a).is_none(), "past the cap a connection is not held");
        drop(held);
        assert!(one.hold(a).is_some(), "holds are given back");
    }

    #[tokio::test]
    async fn a_data_connection_goes_to_the_offer_whose_session_it_resumes() {
        let one = OnePort::new(2121, 16, 16, gauge());
        let ip = IpAddr::from(IP);
        let mut first = one.claim(ip, SessionKeys::with(&[b"first-session"]));
        let mut second = one.claim(ip, SessionKeys::with(&[b"second-session"]));
        assert_eq!(
            one.outstanding(),
            2,
            "offers of one address do not wait for each other"
        );

        // The second session's data connection, though the first offer is older.
        let (mut c, s) = pair().await;
        let mut h = one.hold(ip).unwrap();
        let record = hello_naming(b"second-session");
        c.write_all(&record).await.unwrap();
        assert_eq!(h.classify(&s).await, Verdict::Data);
        assert!(h.hand_over(s).await);
        let got = second.accept().await.expect("routed by the session it names");
        assert_eq!(
            got.prefix, record,
            "the ClientHello goes with it, for the handshake"
        );

        // One naming no session of theirs goes to the oldest offer, whose handshake refuses.
        let (mut c, s) = pair().await;
        let mut h = one.hold(ip).unwrap();
        c.write_all(&hello_naming(b"a-stranger")).await.unwrap();
        assert_eq!(h.classify(&s).await, Verdict::Data);
        assert!(h.hand_over(s).await);
        assert!(first.accept().await.is_some());
    }

    #[tokio::test]
    async fn plain_text_is_a_control_client_and_a_closed_connection_is_gone() {
        let one = OnePort::new(2121, 16, 16, gauge());
        let ip = IpAddr::from(IP);
        let _offer = one.claim(ip, SessionKeys::with(&[]));
        let (mut c, s) = pair().await;
        let mut h = one.hold(ip).unwrap();
        c.write_all(b"USER x\r\n").await.unwrap();
        assert_eq!(h.classify(&s).await, Verdict::Control);
        let (c, s) = pair().await;
        let mut h = one.hold(ip).unwrap();
        drop(c);
        assert_eq!(h.classify(&s).await, Verdict::Gone);
        // A ClientHello that never arrives whole is handed to nobody.
        let (mut c, s) = pair().await;
        let h = one.hold(ip).unwrap();
        c.write_all(&hello_naming(b"x")[..20]).await.unwrap();
        drop(c);
        assert!(!h.hand_over(s).await);
    }

    #[tokio::test]
    async fn a_silent_connection_is_a_control_client_once_its_offers_end() {
        let one = OnePort::new(2121, 16, 16, gauge());
        let ip = IpAddr::from(IP);
        let a = one.claim(ip, SessionKeys::with(&[]));
        let b = one.claim(ip, SessionKeys::with(&[]));
        let (_c, s) = pair().await;
        let mut h = one.hold(ip).unwrap();
        // An offer made after it connected cannot be its own: it does not keep it waiting.
        let _later = one.claim(ip, SessionKeys::with(&[]));
        let watching = tokio::spawn(async move { (h.classify(&s).await, h) });
        drop(a);
        tokio::task::yield_now().await;
        assert!(!watching.is_finished(), "one of its offers is still open");
        drop(b);
        let (verdict, h) = watching.await.unwrap();
        assert_eq!(verdict, Verdict::Control);
        let (mut c2, s2) = pair().await;
        c2.write_all(&hello_naming(b"x")).await.unwrap();
        assert!(
            !h.hand_over(s2).await,
            "nothing is handed to offers that are over"
        );
        assert_eq!(one.outstanding(), 1);
    }

    #[tokio::test]
    async fn a_record_header_claiming_more_than_the_cap_is_refused_without_reading_on() {
        // Found by fuzzing the reader's steps: a header may claim up to 64 KiB, and the reader
        // kept reading a byte at a time past MAX_RECORD until the claim was met.
        let (mut c, mut s) = pair().await;
        let sent = 20 * 1024;
        let mut bytes = vec![0x16, 3, 1, 0xff, 0xff];
        bytes.resize(sent, 0);
        c.write_all(&bytes).await.unwrap();
        c.shutdown().await.unwrap();
        assert_eq!(read_hello(&mut s).await, None);
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).await.unwrap();
        assert_eq!(sent - rest.len(), 5, "only the header was taken from the stream");
        // The longest record TLS allows is still read whole, and nothing after it.
        let (mut c, mut s) = pair().await;
        let body = hello::MAX_RECORD - 5;
        let mut bytes = vec![0x16, 3, 1];
        bytes.extend_from_slice(&u16::try_from(body).unwrap().to_be_bytes());
        bytes.resize(hello::MAX_RECORD + 100, 7);
        c.write_all(&bytes).await.unwrap();
        let got = read_hello(&mut s).await.unwrap();
        assert_eq!(got, bytes[..hello::MAX_RECORD]);
    }

    #[test]
    fn the_first_byte_decides_and_more_bytes_never_change_it() {
        assert_eq!(verdict_of(b""), Verdict::Gone);
        assert_eq!(verdict_of(b"\x16"), Verdict::Data);
        assert_eq!(verdict_of(b"\x16\x03\x01"), Verdict::Data);
        assert_eq!(verdict_of(b"U"), Verdict::Control);
        assert_eq!(verdict_of(b"USER x\r\n"), Verdict::Control);
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_connection_is_held_while_its_offer_is_open_and_a_control_client_once_it_ends() {
        let one = OnePort::new(2121, 16, 16, gauge());
        let ip = IpAddr::from(IP);
        let offer = one.claim(ip, SessionKeys::with(&[]));
        let (_c, s) = pair().await;
        let mut h = one.hold(ip).unwrap();
        let watching = tokio::spawn(async move { h.classify(&s).await });
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(
            !watching.is_finished(),
            "while its offer is open a silent connection may still be its data connection"
        );
        drop(offer);
        assert_eq!(watching.await.unwrap(), Verdict::Control);
    }
}
