//! Network fault injection at the node's UDP socket.
//!
//! Operators and the test suite can make a node drop (or randomly lose) the
//! datagrams it exchanges with given addresses, which is exactly what a
//! network partition looks like to QUIC: keep-alives stop, the connection
//! times out, reconnects fail until the rules are lifted. The rules are set
//! through the daemon's owner-only control socket (`gsync debug net`); with
//! no rules the wrapper only forwards.

use std::collections::HashMap;
use std::fmt;
use std::io::{self, IoSliceMut};
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use quinn::udp::{RecvMeta, Transmit};
use quinn::{AsyncUdpSocket, UdpPoller};
use serde::{Deserialize, Serialize};

/// What to do with traffic to and from one address.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Rule {
    /// Drop everything sent to it.
    pub block_out: bool,
    /// Drop everything received from it.
    pub block_in: bool,
    /// Fraction (0..1) of datagrams lost each way.
    pub loss: f64,
    /// Extra delay, in milliseconds, of every datagram sent to it.
    #[serde(default)]
    pub delay_ms: u64,
}

/// The current rules, shared between the control socket and the endpoint.
#[derive(Debug, Default)]
pub struct FaultRules {
    rules: Mutex<HashMap<IpAddr, Rule>>,
}

impl FaultRules {
    /// Sets the rule for `ip` (a default rule removes it).
    pub fn set(&self, ip: IpAddr, rule: Rule) {
        let mut r = self.rules.lock().unwrap_or_else(|e| e.into_inner());
        if rule == Rule::default() {
            r.remove(&ip);
        } else {
            r.insert(ip, rule);
        }
    }

    /// Removes every rule.
    pub fn clear(&self) {
        self.rules.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    /// The rules in force.
    pub fn list(&self) -> Vec<(IpAddr, Rule)> {
        let r = self.rules.lock().unwrap_or_else(|e| e.into_inner());
        r.iter().map(|(k, v)| (*k, *v)).collect()
    }

    fn delay(&self, ip: IpAddr) -> u64 {
        let r = self.rules.lock().unwrap_or_else(|e| e.into_inner());
        if r.is_empty() {
            return 0;
        }
        r.get(&canonical(ip)).map_or(0, |rule| rule.delay_ms)
    }

    fn drops(&self, ip: IpAddr, outgoing: bool) -> bool {
        let r = self.rules.lock().unwrap_or_else(|e| e.into_inner());
        if r.is_empty() {
            return false;
        }
        let ip = canonical(ip);
        match r.get(&ip) {
            None => false,
            Some(rule) if (outgoing && rule.block_out) || (!outgoing && rule.block_in) => true,
            Some(rule) => rule.loss > 0.0 && rand::random::<f64>() < rule.loss,
        }
    }
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// A UDP socket that applies [`FaultRules`] before forwarding.
pub(crate) struct FaultSocket {
    inner: Arc<dyn AsyncUdpSocket>,
    rules: Arc<FaultRules>,
}

impl FaultSocket {
    pub(crate) fn new(inner: Arc<dyn AsyncUdpSocket>, rules: Arc<FaultRules>) -> Self {
        Self { inner, rules }
    }
}

impl fmt::Debug for FaultSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FaultSocket")
            .field("inner", &self.inner)
            .finish()
    }
}

impl AsyncUdpSocket for FaultSocket {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        self.inner.clone().create_io_poller()
    }

    fn try_send(&self, transmit: &Transmit<'_>) -> io::Result<()> {
        if self.rules.drops(transmit.destination.ip(), true) {
            return Ok(());
        }
        let delay = self.rules.delay(transmit.destination.ip());
        if delay > 0 {
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                // Send a copy later; UDP may drop it anyway if the socket is busy.
                let inner = self.inner.clone();
                let (dest, ecn, seg, src) = (
                    transmit.destination,
                    transmit.ecn,
                    transmit.segment_size,
                    transmit.src_ip,
                );
                let data = transmit.contents.to_vec();
                rt.spawn(async move {
                    tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
                    let t = Transmit {
                        destination: dest,
                        ecn,
                        contents: &data,
                        segment_size: seg,
                        src_ip: src,
                    };
                    let _ = inner.try_send(&t);
                });
                return Ok(());
            }
        }
        self.inner.try_send(transmit)
    }

    fn poll_recv(
        &self,
        cx: &mut Context<'_>,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        let res = self.inner.poll_recv(cx, bufs, meta);
        if let Poll::Ready(Ok(n)) = &res {
            for m in meta.iter_mut().take(*n) {
                if self.rules.drops(m.addr.ip(), false) {
                    // quinn skips a zero-length receive.
                    m.len = 0;
                }
            }
        }
        res
    }

    fn local_addr(&self) -> io::Result<std::net::SocketAddr> {
        self.inner.local_addr()
    }

    fn max_transmit_segments(&self) -> usize {
        self.inner.max_transmit_segments()
    }

    fn max_receive_segments(&self) -> usize {
        self.inner.max_receive_segments()
    }

    fn may_fragment(&self) -> bool {
        self.inner.may_fragment()
    }
}
