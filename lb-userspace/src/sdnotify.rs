//! systemd's readiness and watchdog protocol (sd_notify(3)), spoken
//! directly: one line of `KEY=value` text per datagram to the unix socket
//! named by `$NOTIFY_SOCKET`. That is the whole protocol, so no libsystemd
//! and no crate. Outside systemd (no `NOTIFY_SOCKET`) every call is a no-op.
use std::{
    io,
    os::{
        linux::net::SocketAddrExt,
        unix::{
            ffi::OsStrExt,
            net::{SocketAddr, UnixDatagram},
        },
    },
    time::Duration,
};

use anyhow::{Context, Result, bail};

/// Where the agent reports to systemd.
pub struct Notifier {
    sock: UnixDatagram,
    addr: SocketAddr,
}

impl Notifier {
    /// The notifier `$NOTIFY_SOCKET` names, or `None` when it is unset (not
    /// started by systemd with `Type=notify`). A malformed value is an
    /// error: systemd would then wait for a READY that never comes.
    pub fn from_env() -> Result<Option<Self>> {
        match std::env::var_os("NOTIFY_SOCKET") {
            Some(raw) => Self::new(&raw.into_encoded_bytes()).map(Some),
            None => Ok(None),
        }
    }

    /// A notifier for the socket `raw` names, as `$NOTIFY_SOCKET` does.
    pub fn new(raw: &[u8]) -> Result<Self> {
        let addr = match raw.split_first() {
            // `@name` is the abstract namespace, written with a leading NUL.
            Some((b'@', name)) => SocketAddr::from_abstract_name(name),
            Some((b'/', _)) => SocketAddr::from_pathname(std::ffi::OsStr::from_bytes(raw)),
            _ => bail!(
                "NOTIFY_SOCKET={:?}: expected an absolute path or @abstract-name",
                String::from_utf8_lossy(raw)
            ),
        }
        .context("NOTIFY_SOCKET")?;
        let sock = UnixDatagram::unbound().context("a socket for NOTIFY_SOCKET")?;
        Ok(Self { sock, addr })
    }

    /// Sends `state` (e.g. `READY=1`, `WATCHDOG=1`, `STOPPING=1`).
    pub fn notify(&self, state: &str) -> io::Result<()> {
        self.sock
            .send_to_addr(state.as_bytes(), &self.addr)
            .map(|_| ())
    }
}

/// How often to send `WATCHDOG=1`: half of `$WATCHDOG_USEC`, as
/// sd_watchdog_enabled(3) advises, when the watchdog is on and meant for
/// this process (`$WATCHDOG_PID` unset or ours).
pub fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    if let Ok(pid) = std::env::var("WATCHDOG_PID")
        && pid.parse::<u32>().ok() != Some(std::process::id())
    {
        return None;
    }
    (usec > 0).then(|| Duration::from_micros(usec / 2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_to_a_path_and_to_an_abstract_name() {
        let path = std::env::temp_dir().join(format!("lb-sdnotify-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let rx = UnixDatagram::bind(&path).unwrap();
        Notifier::new(path.as_os_str().as_bytes())
            .unwrap()
            .notify("READY=1")
            .unwrap();
        let mut buf = [0u8; 64];
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
        let _ = std::fs::remove_file(&path);

        let name = format!("lb-sdnotify-{}", std::process::id());
        let rx = UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(&name).unwrap()).unwrap();
        Notifier::new(format!("@{name}").as_bytes())
            .unwrap()
            .notify("WATCHDOG=1")
            .unwrap();
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"WATCHDOG=1");
    }

    #[test]
    fn a_relative_or_empty_socket_is_refused() {
        for bad in [&b"run/notify"[..], b""] {
            let e = Notifier::new(bad).err().expect("refused");
            assert!(format!("{e:#}").contains("absolute path"), "{e:#}");
        }
    }
}
