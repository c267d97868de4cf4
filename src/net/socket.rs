//! The TCP socket beneath everything: it notes when each read returned (and the kernel's receive
//! timestamp of what it read), whatever runs above it. With TLS above it, a message's end is recognised
//! in the decrypted bytes, but its arrival is this socket's: [`Transport::last_arrival`].

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use super::connections::Tracked;
use super::stamps::Stamper;

/// What a connection's byte stream tells [`super::StampedStream`] beyond its bytes.
pub trait Transport: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    /// The clock reads are stamped with.
    type Stamp: Copy;
    /// When the last read from the socket returned, and the kernel's receive timestamp of what it
    /// read (when the kernel gives one).
    fn last_arrival(&self) -> Option<(Self::Stamp, Option<Self::Stamp>)>;
    /// A request ended in what was just read (for the server's idle-connection bookkeeping).
    fn request_seen(&self);
    /// The peer's address.
    fn peer_addr(&self) -> Option<SocketAddr>;
}

/// A TCP socket that notes when its reads return.
#[derive(Debug)]
pub struct TimedTcp<S: Stamper> {
    /// The connection's place in its server's registry. First, so it is dropped (and the registry
    /// forgets the socket) before `inner` closes the socket.
    tracked: Option<Tracked>,
    inner: TcpStream,
    last: Option<(S::Stamp, Option<S::Stamp>)>,
}

impl<S: Stamper> TimedTcp<S> {
    /// Wraps a socket. On Linux it asks the kernel to timestamp what the socket receives; where it
    /// cannot, reads are stamped as they return.
    pub fn new(inner: TcpStream) -> Self {
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::AsRawFd;
            if let Err(e) = super::linux::enable(inner.as_raw_fd()) {
                tracing::debug!(error = %e, "no kernel receive timestamps; stamping reads in user space");
            }
        }
        Self { tracked: None, inner, last: None }
    }

    /// A server's socket, which reports its activity to the server's registry.
    pub(crate) fn tracked(inner: TcpStream, tracked: Tracked) -> Self {
        Self { tracked: Some(tracked), ..Self::new(inner) }
    }

    /// The handle that marks this connection as a member's in its server's registry (none for a
    /// socket no server tracks).
    pub(crate) fn member_mark(&self) -> Option<super::connections::MemberMark> {
        self.tracked.as_ref().map(Tracked::member_mark)
    }

    /// The socket.
    pub fn get_ref(&self) -> &TcpStream {
        &self.inner
    }
}

impl<S: Stamper> Transport for TimedTcp<S> {
    type Stamp = S::Stamp;

    fn last_arrival(&self) -> Option<(S::Stamp, Option<S::Stamp>)> {
        self.last
    }

    fn request_seen(&self) {
        if let Some(tracked) = &self.tracked {
            tracked.touch(true);
        }
    }

    fn peer_addr(&self) -> Option<SocketAddr> {
        self.inner.peer_addr().ok()
    }
}

impl<S: Stamper> AsyncRead for TimedTcp<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        #[cfg(target_os = "linux")]
        let kernel_stamp = {
            use std::os::fd::AsRawFd;
            let fd = this.inner.as_raw_fd();
            loop {
                std::task::ready!(this.inner.poll_read_ready(cx))?;
                match this.inner.try_io(tokio::io::Interest::READABLE, || super::linux::recv_into(fd, buf)) {
                    Ok(stamp) => break stamp,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    Err(e) => return Poll::Ready(Err(e)),
                }
            }
        };
        #[cfg(not(target_os = "linux"))]
        let kernel_stamp: Option<i64> = {
            std::task::ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
            None
        };
        if buf.filled().len() > before {
            this.last = Some((S::now(), kernel_stamp.map(S::from_kernel)));
            if let Some(tracked) = &this.tracked {
                tracked.touch(false);
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: Stamper> AsyncWrite for TimedTcp<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(mut self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
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

impl<S: Stamper> Transport for tokio_rustls::server::TlsStream<TimedTcp<S>> {
    type Stamp = S::Stamp;

    fn last_arrival(&self) -> Option<(S::Stamp, Option<S::Stamp>)> {
        self.get_ref().0.last_arrival()
    }

    fn request_seen(&self) {
        self.get_ref().0.request_seen();
    }

    fn peer_addr(&self) -> Option<SocketAddr> {
        self.get_ref().0.peer_addr()
    }
}

impl<S: Stamper> Transport for tokio_rustls::client::TlsStream<TimedTcp<S>> {
    type Stamp = S::Stamp;

    fn last_arrival(&self) -> Option<(S::Stamp, Option<S::Stamp>)> {
        self.get_ref().0.last_arrival()
    }

    fn request_seen(&self) {
        self.get_ref().0.request_seen();
    }

    fn peer_addr(&self) -> Option<SocketAddr> {
        self.get_ref().0.peer_addr()
    }
}

impl<T: Transport + ?Sized> Transport for Box<T> {
    type Stamp = T::Stamp;

    fn last_arrival(&self) -> Option<(T::Stamp, Option<T::Stamp>)> {
        (**self).last_arrival()
    }

    fn request_seen(&self) {
        (**self).request_seen()
    }

    fn peer_addr(&self) -> Option<SocketAddr> {
        (**self).peer_addr()
    }
}

/// A connection that is plaintext or TLS, decided when it is made.
#[derive(Debug)]
pub enum MaybeTls<P, T> {
    Plain(P),
    Tls(T),
}

macro_rules! either {
    ($self:expr, $inner:ident => $body:expr) => {
        match $self {
            MaybeTls::Plain($inner) => $body,
            MaybeTls::Tls($inner) => $body,
        }
    };
}

impl<P: Transport, T: Transport<Stamp = P::Stamp>> Transport for MaybeTls<P, T> {
    type Stamp = P::Stamp;

    fn last_arrival(&self) -> Option<(P::Stamp, Option<P::Stamp>)> {
        either!(self, io => io.last_arrival())
    }

    fn request_seen(&self) {
        either!(self, io => io.request_seen())
    }

    fn peer_addr(&self) -> Option<SocketAddr> {
        either!(self, io => io.peer_addr())
    }
}

impl<P: AsyncRead + Unpin, T: AsyncRead + Unpin> AsyncRead for MaybeTls<P, T> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        either!(self.get_mut(), io => Pin::new(io).poll_read(cx, buf))
    }
}

impl<P: AsyncWrite + Unpin, T: AsyncWrite + Unpin> AsyncWrite for MaybeTls<P, T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        either!(self.get_mut(), io => Pin::new(io).poll_write(cx, buf))
    }

    fn poll_write_vectored(self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
        either!(self.get_mut(), io => Pin::new(io).poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        either!(self, io => io.is_write_vectored())
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        either!(self.get_mut(), io => Pin::new(io).poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        either!(self.get_mut(), io => Pin::new(io).poll_shutdown(cx))
    }
}

/// A server's connection beneath its HTTP/2 frames: plaintext or TLS.
pub type ServerIo = MaybeTls<TimedTcp<super::ServerStamps>, Box<tokio_rustls::server::TlsStream<TimedTcp<super::ServerStamps>>>>;
/// A client's connection beneath its HTTP/2 frames: plaintext or TLS.
pub type ClientIo = MaybeTls<TimedTcp<super::ClientStamps>, Box<tokio_rustls::client::TlsStream<TimedTcp<super::ClientStamps>>>>;
