//! A TCP connection that stamps the ends of messages as they pass, with the kernel's receive timestamps
//! where the platform gives them.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tonic::transport::server::Connected;

use super::frame::FrameScanner;
use super::stamps::{ServerStamps, Stamper};
use crate::server::connections::Tracked;

/// A TCP connection that stamps the ends of messages as they pass.
#[derive(Debug)]
pub struct StampedStream<S = ServerStamps> {
    /// The connection's place in its server's registry. First, so it is dropped (and the registry
    /// forgets the socket) before `inner` closes the socket.
    tracked: Option<Tracked>,
    inner: TcpStream,
    read_scanner: FrameScanner,
    write_scanner: FrameScanner,
    stamps: Arc<S>,
}

impl<S: Stamper + Default> StampedStream<S> {
    /// Wraps a connection with fresh stamps.
    pub fn new(inner: TcpStream) -> Self {
        Self::with_stamps(inner, Arc::default())
    }
}

impl<S: Stamper> StampedStream<S> {
    /// Wraps a connection, stamping into `stamps`. On Linux it asks the kernel to timestamp what the
    /// connection receives; where it cannot, reads are stamped as they return.
    pub fn with_stamps(inner: TcpStream, stamps: Arc<S>) -> Self {
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::AsRawFd;
            if let Err(e) = super::linux::enable(inner.as_raw_fd()) {
                tracing::debug!(error = %e, "no kernel receive timestamps; stamping reads in user space");
            }
        }
        let (read_scanner, write_scanner) = S::scanners();
        Self { tracked: None, inner, read_scanner, write_scanner, stamps }
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

impl StampedStream<ServerStamps> {
    /// A server's connection, with fresh stamps, that reports its activity to its server's registry.
    pub(crate) fn tracked(inner: TcpStream, tracked: Tracked) -> Self {
        Self { tracked: Some(tracked), ..Self::new(inner) }
    }
}

/// What a handler can learn about the connection a request came in on (a request extension).
#[derive(Debug, Clone)]
pub struct ConnectionInfo {
    /// The peer's address.
    pub remote_addr: Option<SocketAddr>,
    /// The connection's stamps.
    pub stamps: Arc<ServerStamps>,
}

impl Connected for StampedStream<ServerStamps> {
    type ConnectInfo = ConnectionInfo;

    fn connect_info(&self) -> ConnectionInfo {
        ConnectionInfo { remote_addr: self.inner.peer_addr().ok(), stamps: self.stamps.clone() }
    }
}

impl<S: Stamper> AsyncRead for StampedStream<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        #[cfg(target_os = "linux")]
        let kernel_stamp = {
            use std::os::fd::AsRawFd;
            let fd = this.inner.as_raw_fd();
            loop {
                std::task::ready!(this.inner.poll_read_ready(cx))?;
                // SAFETY: `recv` writes only initialized bytes, and says how many.
                let unfilled = unsafe { buf.unfilled_mut() };
                match this.inner.try_io(tokio::io::Interest::READABLE, || super::linux::recv(fd, unfilled)) {
                    Ok((n, stamp)) => {
                        // SAFETY: the kernel initialized the first `n` bytes of the unfilled part.
                        unsafe { buf.assume_init(n) };
                        buf.advance(n);
                        break stamp;
                    }
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
            let at = S::now();
            let ended = this.read_scanner.scan(&buf.filled()[before..]);
            if ended {
                this.stamps.read_end(at, kernel_stamp.map(S::from_kernel));
            }
            if let Some(tracked) = &this.tracked {
                tracked.touch(ended);
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: Stamper> AsyncWrite for StampedStream<S> {
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

