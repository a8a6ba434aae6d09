//! systemd integration: owns the sd_notify protocol — telling the service manager
//! that hearth is ready, reloading, stopping, or what it is doing — over the datagram
//! socket named by `$NOTIFY_SOCKET`, with std alone (no libsystemd, no extra crate).
//!
//! It must never fail or stall the server: without systemd (variable unset) every call
//! is a no-op, and a send error is logged, not returned. It never unsets the variable.

#![deny(unsafe_code)] // narrows lib.rs' module-wide allow to `monotonic_usec` below

use std::ffi::OsStr;
use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};

/// Environment variable systemd sets for `Type=notify` services.
const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";

/// Sends one sd_notify message (newline-separated `KEY=value` assignments) to
/// `$NOTIFY_SOCKET`. Does nothing when the variable is unset; logs and carries on
/// when it is unusable or the send fails, since readiness reporting is advisory.
pub fn notify(state: &str) {
    let Some(spec) = std::env::var_os(NOTIFY_SOCKET) else {
        return;
    };
    let Some(address) = notify_address(&spec) else {
        log::warn!("ignoring unsupported {NOTIFY_SOCKET}={spec:?}");
        return;
    };
    if let Err(error) = send(&address, state) {
        log::warn!("sd_notify {state:?} to {spec:?} failed: {error}");
    }
}

/// Startup finished: listeners are bound and clients can connect.
pub fn ready() {
    notify("READY=1");
}

/// A SIGHUP reload has begun; call [`ready`] when it is done. systemd ≥ 253 wants
/// the monotonic timestamp to tell this reload from an earlier one.
pub fn reloading() {
    notify(&reloading_message(monotonic_usec()));
}

/// Shutdown has begun (sessions are being closed).
pub fn stopping() {
    notify("STOPPING=1");
}

/// One line of free text shown by `systemctl status`.
pub fn status(text: &str) {
    notify(&status_message(text));
}

/// Formats log lines for the journal when stderr goes there: a `<N>` syslog priority
/// prefix, which journald turns into the entry's priority (so `journalctl -p warning`
/// shows warnings and errors only), and no timestamp, which journald adds itself.
/// Elsewhere (a terminal, a file) env_logger's own format stays.
pub fn log_to_journal(builder: &mut env_logger::Builder) {
    if !stderr_is_journal() {
        return;
    }
    builder.format(|out, record| {
        use std::io::Write;
        writeln!(
            out,
            "<{}>{}: {}",
            syslog_priority(record.level()),
            record.target(),
            record.args()
        )
    });
}

/// systemd sets `$JOURNAL_STREAM` to `device:inode` of the stream it connected; it is
/// only ours if stderr is still that stream (not redirected by a shell in between).
fn stderr_is_journal() -> bool {
    use std::os::fd::AsFd;
    use std::os::unix::fs::MetadataExt;
    let Some(stream) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Ok(fd) = io::stderr().as_fd().try_clone_to_owned() else {
        return false;
    };
    let Ok(meta) = std::fs::File::from(fd).metadata() else {
        return false;
    };
    stream.to_str() == Some(&format!("{}:{}", meta.dev(), meta.ino()))
}

fn syslog_priority(level: log::Level) -> u8 {
    match level {
        log::Level::Error => 3,
        log::Level::Warn => 4,
        log::Level::Info => 6,
        log::Level::Debug | log::Level::Trace => 7,
    }
}

/// Parses `$NOTIFY_SOCKET`: an absolute path, or `@name` for a Linux abstract
/// socket. Anything else (relative paths, `vsock:` addresses) is unsupported.
fn notify_address(spec: &OsStr) -> Option<SocketAddr> {
    match spec.as_bytes() {
        [b'@', name @ ..] if !name.is_empty() => SocketAddr::from_abstract_name(name).ok(),
        [b'/', ..] => SocketAddr::from_pathname(spec).ok(),
        _ => None,
    }
}

/// Sends `state` as one datagram from a fresh unbound socket: notifications are rare
/// (start, reload, stop), so keeping a socket open would only cost a descriptor.
fn send(address: &SocketAddr, state: &str) -> io::Result<()> {
    let socket = UnixDatagram::unbound()?;
    let sent = socket.send_to_addr(state.as_bytes(), address)?;
    if sent == state.len() {
        Ok(())
    } else {
        Err(io::Error::new(io::ErrorKind::WriteZero, "short datagram"))
    }
}

fn reloading_message(monotonic_usec: u64) -> String {
    format!("RELOADING=1\nMONOTONIC_USEC={monotonic_usec}")
}

/// Line breaks would start new assignments in the message, so they become spaces.
fn status_message(text: &str) -> String {
    format!("STATUS={}", text.replace(['\n', '\r'], " "))
}

/// CLOCK_MONOTONIC in microseconds, the clock systemd compares reload stamps against.
/// std's `Instant` hides its value, hence the one libc call.
#[allow(unsafe_code)]
fn monotonic_usec() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid, writable timespec that outlives the call.
    let result = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    if result != 0 {
        return 0;
    }
    let seconds = u64::try_from(now.tv_sec).unwrap_or(0);
    let micros = u64::try_from(now.tv_nsec / 1_000).unwrap_or(0);
    seconds.saturating_mul(1_000_000).saturating_add(micros)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;
    use std::time::Duration;

    /// A socket path unique to this test process and purpose, removed on drop.
    struct TempSocketPath(PathBuf);

    impl TempSocketPath {
        fn new(purpose: &str) -> Self {
            let path = std::env::temp_dir().join(format!(
                "hearth-notify-{}-{purpose}.sock",
                std::process::id()
            ));
            let _ = std::fs::remove_file(&path);
            Self(path)
        }
    }

    impl Drop for TempSocketPath {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    fn receive(socket: &UnixDatagram) -> String {
        socket
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut buffer = [0u8; 256];
        let length = socket.recv(&mut buffer).unwrap();
        String::from_utf8(buffer[..length].to_vec()).unwrap()
    }

    #[test]
    fn parses_path_and_abstract_addresses() {
        let path = notify_address(OsStr::new("/run/systemd/notify")).unwrap();
        assert_eq!(
            path.as_pathname(),
            Some(std::path::Path::new("/run/systemd/notify"))
        );
        let abstract_name = notify_address(OsStr::new("@hearth/notify")).unwrap();
        assert_eq!(
            abstract_name.as_abstract_name(),
            Some(&b"hearth/notify"[..])
        );
    }

    #[test]
    fn rejects_unsupported_addresses() {
        for spec in ["", "@", "relative/notify", "vsock:2:1234", "notify"] {
            assert!(notify_address(OsStr::new(spec)).is_none(), "{spec:?}");
        }
        // Longer than sun_path (108 bytes) cannot be addressed.
        let too_long = format!("/{}", "x".repeat(200));
        assert!(notify_address(OsStr::new(&too_long)).is_none());
    }

    #[test]
    fn sends_to_abstract_socket() {
        let name = format!("hearth-notify-test-{}", std::process::id());
        let address = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let receiver = UnixDatagram::bind_addr(&address).unwrap();
        let spec = format!("@{name}");
        send(&notify_address(OsStr::new(&spec)).unwrap(), "STOPPING=1").unwrap();
        assert_eq!(receive(&receiver), "STOPPING=1");
    }

    #[test]
    fn send_to_missing_socket_is_an_error() {
        let path = TempSocketPath::new("missing");
        let address = SocketAddr::from_pathname(&path.0).unwrap();
        assert!(send(&address, "READY=1").is_err());
    }

    #[test]
    fn formats_reload_and_status_messages() {
        assert_eq!(
            reloading_message(1_234_567),
            "RELOADING=1\nMONOTONIC_USEC=1234567"
        );
        assert_eq!(
            status_message("3 sessions\nREADY=1\r"),
            "STATUS=3 sessions READY=1 "
        );
        let earlier = monotonic_usec();
        assert!(earlier > 0);
        assert!(monotonic_usec() >= earlier);
    }

    /// The only test that touches `$NOTIFY_SOCKET`: the environment is process-wide,
    /// so one test sets it, exercises every public call, and removes it.
    #[test]
    fn notifies_socket_named_by_environment() {
        let path = TempSocketPath::new("env");
        let receiver = UnixDatagram::bind(&path.0).unwrap();
        std::env::set_var(NOTIFY_SOCKET, &path.0);
        ready();
        status("serving");
        reloading();
        stopping();
        std::env::remove_var(NOTIFY_SOCKET);
        ready(); // unset again: a no-op, nothing more arrives

        assert_eq!(receive(&receiver), "READY=1");
        assert_eq!(receive(&receiver), "STATUS=serving");
        let reload = receive(&receiver);
        let stamp = reload.strip_prefix("RELOADING=1\nMONOTONIC_USEC=").unwrap();
        assert!(stamp.parse::<u64>().unwrap() > 0);
        assert_eq!(receive(&receiver), "STOPPING=1");
        receiver.set_nonblocking(true).unwrap();
        let mut buffer = [0u8; 16];
        assert_eq!(
            receiver.recv(&mut buffer).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
    }
}
