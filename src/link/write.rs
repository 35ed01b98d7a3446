//! Writing toward a peer, as every stream link does it: whatever is queued is coalesced into
//! one write (one syscall for many events), and a write that does not complete within the
//! write timeout closes the connection (a peer that stopped reading must not hold a task).

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::counters::LinkCounters;
use crate::router::Message;

/// A coalesced write stops growing at this size.
pub const MAX_BATCH: usize = 256 * 1024;

/// Encodes `first` and whatever else is queued into `buf` (with `each`), until `buf` holds
/// [`MAX_BATCH`]; returns how many messages were taken.
pub fn coalesce(first: Arc<Message>, rx: &mut mpsc::Receiver<Arc<Message>>, buf: &mut Vec<u8>, mut each: impl FnMut(&Message, &mut Vec<u8>)) -> u64 {
    let mut next = Some(first);
    let mut n = 0;
    while let Some(m) = next.take() {
        each(&m, buf);
        n += 1;
        if buf.len() < MAX_BATCH {
            next = rx.try_recv().ok();
        }
    }
    n
}

/// Why a write did not go out.
#[derive(Debug)]
pub enum Stop {
    /// The session ended meanwhile.
    Cancelled,
    Failed(std::io::Error),
    /// The write stalled past the write timeout (counted as a slow consumer).
    Slow,
}

/// Writes and flushes `buf` within `timeout`, counting bytes and slow consumers.
pub async fn write_timed<W: AsyncWrite + Unpin>(wr: &mut W, buf: &[u8], timeout: Duration, counters: &LinkCounters, session: &CancellationToken) -> Result<(), Stop> {
    let write = async {
        wr.write_all(buf).await?;
        wr.flush().await
    };
    let r = tokio::select! {
        r = tokio::time::timeout(timeout, write) => r,
        _ = session.cancelled() => return Err(Stop::Cancelled),
    };
    match r {
        Ok(Ok(())) => {
            LinkCounters::add(&counters.bytes_out, buf.len() as u64);
            Ok(())
        }
        Ok(Err(e)) => Err(Stop::Failed(e)),
        Err(_) => {
            LinkCounters::inc(&counters.slow_consumers);
            Err(Stop::Slow)
        }
    }
}
