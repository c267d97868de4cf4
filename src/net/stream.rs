//! A connection that stamps the ends of messages as they pass: the HTTP/2 frames are followed in the
//! bytes the application reads and writes (above TLS, when there is TLS), and a read that completes a
//! message is stamped with the socket's arrival time beneath ([`super::socket::Transport`]).

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tonic::transport::server::Connected;

use super::connections::{MemberMark, Tracked};
use super::frame::FrameScanner;
use super::socket::{MaybeTls, ServerIo, TimedTcp, Transport};
use super::stamps::{ServerStamps, Stamper};

/// A server's connection, plaintext or TLS.
pub type ServerStream = StampedStream<ServerStamps, ServerIo>;

/// A connection that stamps the ends of messages as they pass.
#[derive(Debug)]
pub struct StampedStream<S: Stamper, IO> {
    inner: IO,
    read_scanner: FrameScanner,
    write_scanner: FrameScanner,
    stamps: Arc<S>,
    /// The peer's identity: the Common Name of its TLS certificate (none in plaintext).
    identity: Option<Arc<str>>,
    /// Marks the connection as a member's in its server's registry (a server's connections only).
    member: Option<MemberMark>,
}

impl<S: Stamper + Default> StampedStream<S, TimedTcp<S>> {
    /// Wraps a plaintext TCP connection with fresh stamps.
    pub fn new(inner: TcpStream) -> Self {
        Self::with_stamps(TimedTcp::new(inner), Arc::default())
    }
}

impl<S: Stamper, IO: Transport<Stamp = S::Stamp>> StampedStream<S, IO> {
    /// Wraps a connection, stamping into `stamps`.
    pub fn with_stamps(inner: IO, stamps: Arc<S>) -> Self {
        let (read_scanner, write_scanner) = S::scanners();
        Self { inner, read_scanner, write_scanner, stamps, identity: None, member: None }
    }

    /// Notes the peer's identity (from its TLS certificate).
    pub fn with_identity(mut self, identity: Option<Arc<str>>) -> Self {
        self.identity = identity;
        self
    }

    /// Advances past the `n` bytes of `bufs` written; stamps with `before` (taken before the write's
    /// system call) if a message ended in them.
    fn wrote(&mut self, mut bufs: &[io::IoSlice<'_>], mut n: usize, before: S::Stamp) {
        let mut ends = false;
        while n > 0 && !bufs.is_empty() {
            let take = n.min(bufs[0].len());
            ends |= self.write_scanner.scan(&bufs[0][..take]);
            n -= take;
            bufs = &bufs[1..];
        }
        if ends {
            self.stamps.wrote_end(before);
        }
    }
}

impl ServerStream {
    /// A server's plaintext connection, with fresh stamps, that reports its activity to its server's
    /// registry.
    pub(crate) fn plain(inner: TcpStream, tracked: Tracked) -> Self {
        let member = Some(tracked.member_mark());
        Self { member, ..Self::with_stamps(MaybeTls::Plain(TimedTcp::tracked(inner, tracked)), Arc::default()) }
    }

    /// A server's TLS connection, its handshake done, from a caller with `identity`.
    pub(crate) fn tls(inner: tokio_rustls::server::TlsStream<TimedTcp<ServerStamps>>, identity: Option<Arc<str>>) -> Self {
        let member = inner.get_ref().0.member_mark();
        Self { member, ..Self::with_stamps(MaybeTls::Tls(Box::new(inner)), Arc::default()).with_identity(identity) }
    }
}

/// What a handler can learn about the connection a request came in on (a request extension).
#[derive(Debug, Clone)]
pub struct ConnectionInfo {
    /// The peer's address.
    pub remote_addr: Option<SocketAddr>,
    /// The connection's stamps.
    pub stamps: Arc<ServerStamps>,
    /// The caller's identity: its TLS certificate's Common Name; `None` in plaintext.
    pub identity: Option<Arc<str>>,
    /// Marks the connection as a member's, so the connection cap keeps it over readers.
    pub member: Option<MemberMark>,
}

impl<IO: Transport<Stamp = i64>> Connected for StampedStream<ServerStamps, IO> {
    type ConnectInfo = ConnectionInfo;

    fn connect_info(&self) -> ConnectionInfo {
        ConnectionInfo {
            remote_addr: self.inner.peer_addr(),
            stamps: self.stamps.clone(),
            identity: self.identity.clone(),
            member: self.member.clone(),
        }
    }
}

impl<S: Stamper, IO: Transport<Stamp = S::Stamp>> AsyncRead for StampedStream<S, IO> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        std::task::ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        if buf.filled().len() > before && this.read_scanner.scan(&buf.filled()[before..]) {
            // What was read arrived no later than the socket's last read returned.
            if let Some((at, kernel)) = this.inner.last_arrival() {
                this.stamps.read_end(at, kernel);
            }
            this.inner.request_seen();
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: Stamper, IO: Transport<Stamp = S::Stamp>> AsyncWrite for StampedStream<S, IO> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let at = S::now();
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = polled {
            self.wrote(&[io::IoSlice::new(buf)], n, at);
        }
        polled
    }

    fn poll_write_vectored(mut self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
        let at = S::now();
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = polled {
            self.wrote(bufs, n, at);
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
