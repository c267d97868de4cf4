//! The system calls synclab makes through `libc`, behind safe functions: above all the kernel's
//! timestamps. Receive timestamps (SO_TIMESTAMPNS) say when the data reached the socket, before any
//! process woke up to read it. On loopback that is inside the sender's write, so with it the time each
//! side takes to wake up and read drops out of both directions. Transmit timestamps (SO_TIMESTAMPING)
//! say when a datagram left.
//!
//! Linux only: the portable path stamps reads as they return.
//!
//! This is the one module of the crate with `unsafe` code, each block with a `SAFETY:` note that says
//! why it holds. The few calls that are not about timestamps live here too ([`shutdown`],
//! [`clock_ticks_per_second`], [`yield_to_services`]) so that no other module needs `unsafe`.
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::RawFd;

/// Asks the kernel to stamp the data `fd` receives.
pub(crate) fn enable(fd: RawFd) -> io::Result<()> {
    set_socket_option(fd, libc::SO_TIMESTAMPNS, 1)
}

/// Sets the SOL_SOCKET option `name` of `fd` to `value`.
fn set_socket_option(fd: RawFd, name: libc::c_int, value: libc::c_int) -> io::Result<()> {
    // SAFETY: the pointer and length describe `value`, a c_int alive for the whole call, which
    // setsockopt(2) only reads; a descriptor that is not an open socket only makes the call fail.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            name,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

/// Reads into `buf` without blocking; returns the bytes read and the kernel's receive time of the
/// last segment among them (ns since the epoch), if the kernel gave one.
pub(crate) fn recv(fd: RawFd, buf: &mut [MaybeUninit<u8>]) -> io::Result<(usize, Option<i64>)> {
    let mut iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
    let mut control = [0u64; 16]; // room for a cmsghdr and a timespec, aligned
    let mut msg = message(&mut iov, &mut control);
    let n = receive(fd, &mut msg, libc::MSG_DONTWAIT)?;
    Ok((n, rx_stamp(&msg)))
}

/// As [`recv`], into the unfilled part of a tokio read buffer, and marks what was read as filled: the
/// kernel's receive time of what was read, if the kernel gave one.
pub(crate) fn recv_into(fd: RawFd, buf: &mut tokio::io::ReadBuf<'_>) -> io::Result<Option<i64>> {
    // SAFETY: `unfilled_mut` asks that no initialized byte be de-initialized through the slice it
    // returns; `recv` only lets recvmsg(2) write bytes into it, and never reads or uninitializes any.
    let unfilled = unsafe { buf.unfilled_mut() };
    let (n, stamp) = recv(fd, unfilled)?;
    // SAFETY: recvmsg returned `n`, so the kernel wrote the first `n` bytes of the unfilled part.
    unsafe { buf.assume_init(n) };
    buf.advance(n);
    Ok(stamp)
}

/// One datagram read without blocking: its length (the whole datagram's, even when longer than `buf`),
/// its sender, and the kernel's receive time (host ns since the epoch), if the kernel gave one.
pub(crate) fn recv_from(fd: RawFd, buf: &mut [u8]) -> io::Result<(usize, std::net::SocketAddr, Option<i64>)> {
    let mut iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
    let mut control = [0u64; 32];
    // SAFETY: sockaddr_storage is plain integers, for which all-zero is a valid value; it lives until
    // after the recvmsg call that writes the sender's address into it.
    let mut name: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut msg = message(&mut iov, &mut control);
    msg.msg_name = (&mut name as *mut libc::sockaddr_storage).cast();
    msg.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as _;
    let n = receive(fd, &mut msg, libc::MSG_DONTWAIT | libc::MSG_TRUNC)?;
    let from =
        sockaddr_to_std(&name).ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "datagram from an address that is not IP"))?;
    Ok((n, from, rx_stamp(&msg)))
}

/// The kernel's receive time (SCM_TIMESTAMPNS) among the control messages `receive` filled in.
fn rx_stamp(msg: &libc::msghdr) -> Option<i64> {
    let mut stamp = None;
    // SAFETY: `msg` is the header recvmsg filled in: CMSG_FIRSTHDR and CMSG_NXTHDR return only headers
    // that lie whole within msg_control..msg_controllen (null past the end), and an SCM_TIMESTAMPNS
    // header's data is a timespec, read unaligned.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_TIMESTAMPNS {
                let ts: libc::timespec = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast());
                stamp = timespec_nanos(&ts);
            }
            cmsg = libc::CMSG_NXTHDR(msg, cmsg);
        }
    }
    stamp
}

/// Waits in poll(2) up to `timeout` (whole milliseconds, rounded up) for `events` on `fd`; returns what
/// poll reported: none (0) when the time ran out or a signal interrupted the wait.
pub(crate) fn poll(fd: RawFd, events: libc::c_short, timeout: std::time::Duration) -> io::Result<libc::c_short> {
    let mut pfd = libc::pollfd { fd, events, revents: 0 };
    let ms = timeout.as_micros().div_ceil(1000).min(i32::MAX as u128) as libc::c_int;
    // SAFETY: the pointer is to one initialized pollfd (count 1), alive for the whole call.
    let r = unsafe { libc::poll(&mut pfd, 1, ms) };
    if r >= 0 {
        return Ok(if r > 0 { pfd.revents } else { 0 });
    }
    let e = io::Error::last_os_error();
    if e.kind() == io::ErrorKind::Interrupted { Ok(0) } else { Err(e) }
}

/// A message header reading into `iov` with room for control messages in `control`.
fn message(iov: &mut libc::iovec, control: &mut [u64]) -> libc::msghdr {
    // SAFETY: msghdr is integers and raw pointers, for which all-zero (null, 0) is a valid value. The
    // pointers set below are only dereferenced by recvmsg, while the caller keeps `iov` and `control`.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(control) as _;
    msg
}

/// recvmsg(2) on `msg` with `flags`: the bytes read.
fn receive(fd: RawFd, msg: &mut libc::msghdr, flags: libc::c_int) -> io::Result<usize> {
    // SAFETY: `msg` (built by `message`) points at an iovec, a control buffer and, if set, a name buffer,
    // each writable for the length stated beside it and borrowed for the whole call; the kernel writes
    // no further.
    let n = unsafe { libc::recvmsg(fd, msg, flags) };
    if n < 0 { Err(io::Error::last_os_error()) } else { Ok(n as usize) }
}

/// A kernel timestamp in ns since the epoch; `None` for zero (none taken). The casts matter where
/// `time_t` and `c_long` are 32 bits.
#[allow(clippy::unnecessary_cast)]
fn timespec_nanos(ts: &libc::timespec) -> Option<i64> {
    let nanos = (ts.tv_sec as i64).saturating_mul(1_000_000_000).saturating_add(ts.tv_nsec as i64);
    (nanos > 0).then_some(nanos)
}

fn sockaddr_to_std(name: &libc::sockaddr_storage) -> Option<std::net::SocketAddr> {
    match name.ss_family as libc::c_int {
        libc::AF_INET => {
            // SAFETY: sockaddr_storage is larger than sockaddr_in, so the read stays inside it, and the
            // family says the kernel wrote a sockaddr_in there (any bytes are a valid one: integers).
            let a: libc::sockaddr_in = unsafe { std::ptr::read_unaligned((name as *const libc::sockaddr_storage).cast()) };
            let ip = std::net::Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr));
            Some(std::net::SocketAddr::new(ip.into(), u16::from_be(a.sin_port)))
        }
        libc::AF_INET6 => {
            // SAFETY: sockaddr_storage is larger than sockaddr_in6, so the read stays inside it, and the
            // family says the kernel wrote a sockaddr_in6 there (any bytes are a valid one: integers).
            let a: libc::sockaddr_in6 = unsafe { std::ptr::read_unaligned((name as *const libc::sockaddr_storage).cast()) };
            let ip = std::net::Ipv6Addr::from(a.sin6_addr.s6_addr);
            Some(std::net::SocketAddr::new(ip.into(), u16::from_be(a.sin6_port)))
        }
        _ => None,
    }
}

/// Prepares `fd` for software transmit timestamps of the datagrams that ask for one
/// ([`send_to`] with `stamp`), each tagged with a sequence number counted over those datagrams alone
/// from 0, delivered on the error queue. Nothing is stamped unless a send asks: a stamp costs the
/// sender a copy of the packet's metadata and a read of the error queue.
pub(crate) fn enable_tx_stamps(fd: RawFd) -> io::Result<()> {
    let flags = libc::SOF_TIMESTAMPING_SOFTWARE | libc::SOF_TIMESTAMPING_OPT_ID | libc::SOF_TIMESTAMPING_OPT_TSONLY;
    set_socket_option(fd, libc::SO_TIMESTAMPING, flags as libc::c_int)
}

/// Sends `bytes` to `to` (`None`: the connected peer) without blocking (one sendmsg(2)); with `stamp`,
/// asks for the datagram's software transmit timestamp (a per-datagram SO_TIMESTAMPING control
/// message, Linux 4.13 and later).
pub(crate) fn send_to(fd: RawFd, bytes: &[u8], to: Option<std::net::SocketAddr>, stamp: bool) -> io::Result<usize> {
    let mut iov = libc::iovec { iov_base: bytes.as_ptr().cast_mut().cast(), iov_len: bytes.len() };
    // SAFETY: msghdr is integers and raw pointers, for which all-zero (null, 0) is a valid value; every
    // pointer set below is to a local that outlives the sendmsg call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    let mut name = to.map(std_to_sockaddr);
    if let Some((name, len)) = name.as_mut() {
        msg.msg_name = (name as *mut libc::sockaddr_storage).cast();
        msg.msg_namelen = *len;
    }
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    let mut control = [0u64; 4]; // one cmsghdr and a u32, aligned
    if stamp {
        // SAFETY: CMSG_SPACE and CMSG_LEN are size computations on their argument; no memory is touched.
        let (space, len) =
            unsafe { (libc::CMSG_SPACE(std::mem::size_of::<u32>() as u32), libc::CMSG_LEN(std::mem::size_of::<u32>() as u32)) };
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = space as _;
        // SAFETY: msg_control points at `control` (32 bytes, u64-aligned) with msg_controllen =
        // CMSG_SPACE(4) <= 32, so CMSG_FIRSTHDR returns a non-null, aligned header inside it, and the
        // header and its 4 bytes of data fit; the data is written unaligned.
        unsafe {
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SO_TIMESTAMPING;
            (*cmsg).cmsg_len = len as _;
            std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<u32>(), libc::SOF_TIMESTAMPING_TX_SOFTWARE);
        }
    }
    // SAFETY: `msg` points at `iov` (the caller's `bytes`), the optional name and the control buffer,
    // each readable for the length stated beside it and alive for the whole call; sendmsg only reads.
    let n = unsafe { libc::sendmsg(fd, &msg, libc::MSG_DONTWAIT) };
    if n < 0 { Err(io::Error::last_os_error()) } else { Ok(n as usize) }
}

fn std_to_sockaddr(addr: std::net::SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: sockaddr_storage is plain integers, for which all-zero is a valid value.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match addr {
        std::net::SocketAddr::V4(a) => {
            // SAFETY: sockaddr_in is plain integers, for which all-zero is a valid value.
            let mut sin: libc::sockaddr_in = unsafe { std::mem::zeroed() };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_port = a.port().to_be();
            sin.sin_addr.s_addr = u32::from(*a.ip()).to_be();
            // SAFETY: sockaddr_storage is larger than sockaddr_in, so the write stays inside `storage`;
            // write_unaligned asks for no alignment.
            unsafe { std::ptr::write_unaligned((&mut storage as *mut libc::sockaddr_storage).cast(), sin) };
            std::mem::size_of::<libc::sockaddr_in>()
        }
        std::net::SocketAddr::V6(a) => {
            // SAFETY: sockaddr_in6 is plain integers, for which all-zero is a valid value.
            let mut sin6: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_port = a.port().to_be();
            sin6.sin6_addr.s6_addr = a.ip().octets();
            sin6.sin6_flowinfo = a.flowinfo();
            sin6.sin6_scope_id = a.scope_id();
            // SAFETY: sockaddr_storage is larger than sockaddr_in6, so the write stays inside `storage`;
            // write_unaligned asks for no alignment.
            unsafe { std::ptr::write_unaligned((&mut storage as *mut libc::sockaddr_storage).cast(), sin6) };
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (storage, len as libc::socklen_t)
}

/// Takes one transmit timestamp off `fd`'s error queue without blocking: the sent datagram's sequence
/// number and when it left (host ns since the epoch). `Ok(None)` for an error-queue entry that is not
/// a timestamp; `WouldBlock` when the queue is empty.
pub(crate) fn recv_tx_stamp(fd: RawFd) -> io::Result<Option<(u32, i64)>> {
    let mut data = [0u8; 64];
    let mut iov = libc::iovec { iov_base: data.as_mut_ptr().cast(), iov_len: data.len() };
    let mut control = [0u64; 32];
    let mut msg = message(&mut iov, &mut control);
    receive(fd, &mut msg, libc::MSG_ERRQUEUE | libc::MSG_DONTWAIT)?;
    let (mut stamp, mut id) = (None, None);
    // SAFETY: as in `rx_stamp`, the cmsg macros return only headers whole within the control buffer
    // recvmsg filled in. An SCM_TIMESTAMPING header's data is a struct scm_timestamping (three
    // timespecs, the first read here) and an IP_RECVERR / IPV6_RECVERR header's starts with a
    // sock_extended_err; both are read unaligned.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            let (level, kind) = ((*cmsg).cmsg_level, (*cmsg).cmsg_type);
            if level == libc::SOL_SOCKET && kind == libc::SCM_TIMESTAMPING {
                // struct scm_timestamping: three timespecs, the first the software one.
                let ts: libc::timespec = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast());
                stamp = timespec_nanos(&ts);
            } else if (level == libc::SOL_IP && kind == libc::IP_RECVERR) || (level == libc::SOL_IPV6 && kind == libc::IPV6_RECVERR) {
                let err: libc::sock_extended_err = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast());
                if err.ee_errno == libc::ENOMSG as u32 && err.ee_origin == libc::SO_EE_ORIGIN_TIMESTAMPING {
                    id = Some(err.ee_data);
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    Ok(id.zip(stamp))
}

/// Shuts down both directions of socket `fd` (shutdown(2)): the task serving the connection reads
/// end-of-file. Errors are ignored (the peer may have closed it already). For the connection registry
/// alone, which calls it only for a socket still registered, so still open (a descriptor number since
/// reused would shut down another socket).
pub(crate) fn shutdown(fd: RawFd) {
    // SAFETY: shutdown(2) takes no pointers and touches no memory of this process; the descriptor is
    // an open socket by the caller's registry (see the function's doc).
    unsafe {
        libc::shutdown(fd, libc::SHUT_RDWR);
    }
}

/// Lowers the calling thread's CPU priority to the least (nice 19), and so that of the threads it starts
/// after: a short-lived helper beside a service (a container's health check) then gives way to the
/// service whenever both want a CPU, instead of delaying it. Best effort: an error leaves it as it was.
pub fn yield_to_services() -> io::Result<()> {
    // SAFETY: setpriority(2) takes no pointers; on Linux `who` 0 with PRIO_PROCESS names the calling
    // thread, whose nice value alone changes (threads started later inherit it).
    let r = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, 19) };
    if r == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

/// The kernel's clock-tick rate (`sysconf(_SC_CLK_TCK)`, the unit of the CPU times in /proc/PID/stat),
/// or `None` if the system gives none.
pub fn clock_ticks_per_second() -> Option<u64> {
    // SAFETY: sysconf(3) takes a name and no pointers; it only reads a system constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(hz).ok().filter(|&hz| hz > 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    /// The nice value of the calling thread, from /proc (field 19 of its stat line).
    fn nice() -> i64 {
        let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
        let after_name = &stat[stat.rfind(')').unwrap() + 2..];
        after_name.split(' ').nth(16).unwrap().parse().unwrap()
    }

    /// Pins: a thread that yields to services runs at nice 19, and so do the threads it starts; the
    /// threads it did not start keep their priority.
    #[test]
    fn a_thread_that_yields_to_services_runs_at_the_least_priority() {
        let before = nice();
        let (own, child) = std::thread::spawn(|| {
            yield_to_services().unwrap();
            (nice(), std::thread::spawn(nice).join().unwrap())
        })
        .join()
        .unwrap();
        assert_eq!((own, child), (19, 19));
        assert_eq!(nice(), before, "the other threads keep theirs");
    }

    /// The server matches stamps to replies by sequence number, counting only the replies that asked
    /// for one: the kernel must count the same way (and deliver nothing for the others).
    #[test]
    fn only_datagrams_that_ask_are_stamped_and_they_are_numbered_from_zero() {
        let receiver = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = receiver.local_addr().unwrap();
        let sender = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let fd = sender.as_raw_fd();
        enable_tx_stamps(fd).unwrap();
        for (i, stamp) in [false, true, false, false, true, true].into_iter().enumerate() {
            assert_eq!(send_to(fd, &[i as u8; 48], Some(to), stamp).unwrap(), 48);
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
        let mut ids = Vec::new();
        loop {
            match recv_tx_stamp(fd) {
                Ok(Some((id, host))) => {
                    assert!(host > 1_600_000_000_000_000_000, "a stamp on the host clock: {host}");
                    ids.push(id);
                }
                Ok(None) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("error queue: {e}"),
            }
        }
        assert_eq!(ids, vec![0, 1, 2]);
        let mut buf = [0u8; 64];
        for i in 0..6u8 {
            let (n, _) = receiver.recv_from(&mut buf).unwrap();
            assert_eq!((n, buf[0]), (48, i), "every datagram arrived, in order");
        }
    }

    /// Pins that the tick rate is read from the system, not assumed: positive, and one of the rates
    /// Linux is built with (USER_HZ is 100 on most systems, other values on some).
    #[test]
    fn the_clock_tick_rate_is_the_systems() {
        let hz = clock_ticks_per_second().expect("sysconf(_SC_CLK_TCK)");
        assert!((1..=10_000).contains(&hz), "{hz} ticks per second");
    }
}
