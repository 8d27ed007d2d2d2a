//! The UDP socket a node's sync stream uses (an HA pair's, a cluster's):
//! bound on `listen`, with a task that hands every datagram to the agent's
//! loop with its sender's address.
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, Result};
use log::debug;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use super::wire;

/// Sync datagrams as they arrive, with their sender's address.
pub type Datagrams = mpsc::Receiver<(SocketAddr, Vec<u8>)>;

/// `what` names the socket in errors ("the HA sync socket").
pub fn bind(listen: SocketAddr, what: &str) -> Result<(Arc<UdpSocket>, Datagrams)> {
    let std_sock =
        std::net::UdpSocket::bind(listen).with_context(|| format!("binding {what} on {listen}"))?;
    std_sock.set_nonblocking(true)?;
    let sock = Arc::new(UdpSocket::from_std(std_sock)?);
    let (tx, datagrams) = mpsc::channel(1024);
    let rsock = sock.clone();
    tokio::spawn(async move {
        let mut buf = vec![0u8; wire::UDP_MAX];
        loop {
            let Ok((n, from)) = rsock.recv_from(&mut buf).await else {
                continue;
            };
            debug!("sync: {n} bytes from {from}");
            if tx.send((from, buf[..n].to_vec())).await.is_err() {
                return;
            }
        }
    });
    Ok((sock, datagrams))
}
