//! HA bulk copies read off the agent's loop. The peer's request is noted
//! by the node (`Node::take_bulk_request`); reading a table of millions of
//! flows takes seconds, during which the loop keeps sending heartbeats,
//! answering probes and streaming. Events pushed meanwhile are held and
//! follow the copy (`stream::Outbox::begin_bulk`).
use anyhow::Result;
use tokio::task::JoinHandle;

use super::Agent;
use crate::{datapath, ha::mirror, ha::wire::FlowEvent};

/// A bulk copy being read on a blocking thread.
pub(super) type Reading = JoinHandle<Result<Vec<FlowEvent>>>;

impl Agent {
    /// Starts reading a copy if the peer asked for one and none is being
    /// read (a request that comes during a read is served by another read
    /// after it, as each request restarts the copy).
    pub(super) fn start_bulk_read(&mut self, reading: &mut Option<Reading>) {
        if reading.is_some() {
            return;
        }
        if let Some(h) = self.ha.as_mut() {
            if !h.take_bulk_request() {
                return;
            }
            h.bulk_reading();
        } else if let Some(c) = self.cluster.as_mut() {
            if !c.node.copy_wanted() {
                return;
            }
            c.node.copy_reading();
        } else {
            return;
        }
        let pin_dir = self.cfg.bpf.pin_dir.clone();
        *reading = Some(tokio::task::spawn_blocking(move || {
            let flows = datapath::open_flows(&pin_dir)?;
            mirror::snapshot(&flows, datapath::now_ns())
        }));
    }

    /// Sends what the read found, then starts the next read if asked.
    pub(super) fn bulk_read(
        &mut self,
        read: std::result::Result<Result<Vec<FlowEvent>>, tokio::task::JoinError>,
        reading: &mut Option<Reading>,
    ) {
        let read = read.unwrap_or_else(|e| Err(anyhow::anyhow!("the copy's thread: {e}")));
        if let Some(h) = self.ha.as_mut() {
            h.send_bulk(read);
        } else if let Some(c) = self.cluster.as_mut() {
            c.node.send_copy(read);
        }
        self.start_bulk_read(reading);
    }
}
