//! `RawLink`: a transport's link before any protocol of ours runs on it, whatever the
//! transport. TCP is a variant of its own (no box, no virtual call on the hot path); other
//! transports plug in boxed.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use tokio::net::TcpStream;

use super::{link_enum, Dialer, Link, Listener};

/// A raw link of any transport.
pub(crate) enum RawLink {
    /// TCP (IPv4 or IPv6).
    Tcp(TcpStream),
    /// Any other transport's link.
    Other(Box<dyn Link>),
}

link_enum!(impl[] RawLink { RawLink::Tcp, RawLink::Other });

impl From<TcpStream> for RawLink {
    fn from(tcp: TcpStream) -> Self {
        RawLink::Tcp(tcp)
    }
}

/// A raw link being made.
type Dialing = Pin<Box<dyn Future<Output = io::Result<RawLink>> + Send>>;

/// A dialer with its type erased: what a resumable session keeps to make new links.
#[derive(Clone)]
pub(crate) struct DialFn(Arc<dyn Fn(SocketAddr) -> Dialing + Send + Sync>);

/// Erases a dialer's type.
pub(crate) fn erase_dialer<D: Dialer>(dialer: D) -> DialFn
where
    D::Raw: Into<RawLink>,
{
    let dialer = Arc::new(dialer);
    DialFn(Arc::new(move |addr| {
        let dialer = dialer.clone();
        Box::pin(async move { dialer.dial(addr).await.map(Into::into) })
    }))
}

impl Dialer for DialFn {
    type Raw = RawLink;

    fn dial(&self, addr: SocketAddr) -> impl Future<Output = io::Result<RawLink>> + Send {
        (self.0)(addr)
    }
}

/// A listener or dialer of a transport from outside this crate, whose links travel boxed.
pub(crate) struct Boxed<T>(pub(crate) T);

impl<L: Listener> Listener for Boxed<L> {
    type Raw = RawLink;

    async fn accept(&mut self) -> io::Result<RawLink> {
        Ok(RawLink::Other(Box::new(self.0.accept().await?)))
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }
}

impl<D: Dialer> Dialer for Boxed<D> {
    type Raw = RawLink;

    async fn dial(&self, addr: SocketAddr) -> io::Result<RawLink> {
        Ok(RawLink::Other(Box::new(self.0.dial(addr).await?)))
    }
}
