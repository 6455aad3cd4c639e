//! Reading an RBD image as an [`AsyncRead`]: a blocking thread reads
//! object-sized chunks with librbd and hands them over a bounded channel, so
//! at most a few chunks are in memory per download, and a reader that goes
//! away (the client hung up) stops the thread at its next chunk.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, ReadBuf};
use tokio::sync::mpsc;

use super::errors::ceph_error;

/// Bytes per librbd read: one default-sized RBD object.
const CHUNK: u64 = 4 << 20;
/// Chunks read ahead of the consumer.
const READ_AHEAD: usize = 2;

/// Streams `image` from byte `offset` to `end`, on a blocking thread that
/// holds `guard` until it is done.
pub(crate) fn spawn<G: Send + 'static>(
    image: ::rbd::Image,
    offset: u64,
    end: u64,
    guard: G,
) -> ChannelReader {
    let (tx, rx) = mpsc::channel(READ_AHEAD);
    tokio::task::spawn_blocking(move || {
        let _guard = guard;
        let mut position = offset;
        while position < end {
            let len = usize::try_from(CHUNK.min(end - position)).unwrap_or(usize::MAX);
            let mut buf = vec![0u8; len];
            let chunk = match image.read_at(position, &mut buf) {
                Ok(0) => Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("{} ended at byte {position}, before {end}", image.spec()),
                )),
                Ok(n) => {
                    buf.truncate(n);
                    position += n as u64;
                    Ok(Bytes::from(buf))
                }
                Err(e) => Err(io::Error::other(ceph_error(e).to_string())),
            };
            let failed = chunk.is_err();
            if tx.blocking_send(chunk).is_err() || failed {
                break;
            }
        }
    });
    ChannelReader {
        rx,
        current: Bytes::new(),
    }
}

/// The receiving end: an [`AsyncRead`] over the chunks.
pub(crate) struct ChannelReader {
    rx: mpsc::Receiver<io::Result<Bytes>>,
    current: Bytes,
}

impl AsyncRead for ChannelReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        while self.current.is_empty() {
            match self.rx.poll_recv(cx) {
                Poll::Ready(Some(Ok(chunk))) => self.current = chunk,
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(e)),
                Poll::Ready(None) => return Poll::Ready(Ok(())),
                Poll::Pending => return Poll::Pending,
            }
        }
        let n = self.current.len().min(buf.remaining());
        buf.put_slice(&self.current[..n]);
        self.current.advance(n);
        Poll::Ready(Ok(()))
    }
}
