//! What every connection shares: reading frames, a writer task, the
//! reasons a connection ends.

use bytes::Bytes;
use shoal_proto::{FrameDecoder, FrameKind};

use crate::recycle;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{mpsc, oneshot};

/// A service on its own thread: stopped and joined on drop.
pub(crate) struct Background {
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Background {
    /// Runs `serve` on a new thread named `name`, in a single-threaded tokio
    /// runtime; `serve` gets the receiver that says when to stop. The runtime
    /// is built here, so failing to build it is the caller's error.
    pub(crate) fn spawn<F, Fut>(name: String, serve: F) -> std::io::Result<Background>
    where
        F: FnOnce(oneshot::Receiver<()>) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()>,
    {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let (stop, stop_rx) = oneshot::channel();
        let thread = std::thread::Builder::new().name(name).spawn(move || runtime.block_on(serve(stop_rx)))?;
        Ok(Background { stop: Some(stop), thread: Some(thread) })
    }

    /// Asks the service to stop and waits for its thread.
    pub(crate) fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.join();
    }

    /// Lets the thread finish on its own, unwaited: for a service that has
    /// already said it is done but may still be tearing down (a worker's
    /// pool finishing a task it cannot interrupt).
    pub(crate) fn detach(&mut self) {
        self.stop.take();
        self.thread.take();
    }

    /// Waits for the thread to end on its own. On the service's own thread
    /// (its last user let go from a callback) it only detaches: a thread
    /// cannot wait for itself.
    pub(crate) fn join(&mut self) {
        if let Some(thread) = self.thread.take()
            && thread.thread().id() != std::thread::current().id()
        {
            // A panic on the service thread is already reported by its hook.
            let _ = thread.join();
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Why a connection was closed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Closed {
    #[error("the peer closed the connection")]
    Eof,
    #[error("the peer closed the connection in the middle of a frame")]
    Truncated,
    #[error("read failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Protocol(#[from] shoal_proto::ProtoError),
    #[error("handshake refused: {0}")]
    Handshake(#[from] shoal_proto::HandshakeError),
    #[error("expected a message frame, got raw bytes")]
    UnexpectedRaw,
    #[error("unexpected: {0}")]
    Unexpected(&'static str),
    #[error("a worker must register before anything else")]
    NotRegistered,
    #[error("the scheduler is shutting down")]
    Shutdown,
}

pub(crate) struct FrameReader {
    read: OwnedReadHalf,
    decoder: FrameDecoder,
    buf: Vec<u8>,
}

impl FrameReader {
    pub(crate) fn new(read: OwnedReadHalf, max_frame: usize) -> FrameReader {
        FrameReader { read, decoder: FrameDecoder::new(max_frame), buf: vec![0; 64 * 1024] }
    }

    /// The next frame, message or raw.
    pub(crate) async fn next_frame(&mut self) -> Result<shoal_proto::Frame, Closed> {
        loop {
            if let Some(frame) = self.decoder.next_frame()? {
                return Ok(frame);
            }
            let n = self.read.read(&mut self.buf).await?;
            if n == 0 {
                return Err(if self.decoder.buffered() > 0 { Closed::Truncated } else { Closed::Eof });
            }
            self.decoder.push(&self.buf[..n]);
        }
    }

    /// The next message if it is here already, read with no wait; `None`
    /// when the next frame has not fully arrived (or is raw bytes, left for
    /// the next read).
    pub(crate) fn buffered_message(&mut self) -> Result<Option<Vec<u8>>, Closed> {
        match self.decoder.next_header()? {
            Some((FrameKind::Message, _)) => Ok(self.decoder.next_frame()?.map(|f| f.body)),
            _ => Ok(None),
        }
    }

    /// The next frame's body, which must be raw bytes. A large body is read
    /// straight from the connection into a [`Buffer`](crate::recycle::Buffer):
    /// the kernel's copy is the only one, where the decoder's buffer would
    /// grow by doubling and be copied out of again.
    pub(crate) async fn next_raw(&mut self) -> Result<Bytes, Closed> {
        loop {
            if let Some((kind, len)) = self.decoder.next_header()? {
                if kind != FrameKind::Raw {
                    return Err(Closed::Unexpected("a message frame where raw bytes were due"));
                }
                // Sized from the header (within the frame cap, checked
                // above), but only once the body has started to arrive: a
                // peer that declares a large frame and sends nothing more
                // gets no memory set aside for it.
                if len >= recycle::LARGE && self.decoder.buffered() > shoal_proto::HEADER_LEN {
                    let mut body = recycle::Buffer::new(len)?;
                    let have = self.decoder.take_body_start(body.as_mut());
                    self.read.read_exact(&mut body.as_mut()[have..]).await.map_err(|e| match e.kind() {
                        std::io::ErrorKind::UnexpectedEof => Closed::Truncated,
                        _ => Closed::Io(e),
                    })?;
                    return Ok(body.freeze());
                }
                if len < recycle::LARGE
                    && let Some(frame) = self.decoder.next_frame()?
                {
                    return Ok(Bytes::from(frame.body));
                }
            }
            let n = self.read.read(&mut self.buf).await?;
            if n == 0 {
                return Err(if self.decoder.buffered() > 0 { Closed::Truncated } else { Closed::Eof });
            }
            self.decoder.push(&self.buf[..n]);
        }
    }

    /// The next message frame's body.
    pub(crate) async fn next_message(&mut self) -> Result<Vec<u8>, Closed> {
        let frame = self.next_frame().await?;
        if frame.kind != FrameKind::Message {
            return Err(Closed::UnexpectedRaw);
        }
        Ok(frame.body)
    }
}

/// Writes what is queued for one connection, everything queued at once.
pub(crate) async fn writer(mut write: OwnedWriteHalf, mut out: mpsc::UnboundedReceiver<Vec<u8>>) {
    while let Some(first) = out.recv().await {
        // Everything queued goes out in one write.
        let mut batch = first;
        while let Ok(more) = out.try_recv() {
            batch.extend_from_slice(&more);
        }
        if write.write_all(&batch).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use shoal_proto::{encode_message, encode_raw, raw_header};
    use tokio::net::{TcpListener, TcpStream};

    use super::*;

    /// A reader of what `wire` (written in one go, then closed) holds.
    async fn reader_of(wire: Vec<u8>) -> FrameReader {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("binds loopback");
        let address = listener.local_addr().expect("has an address");
        tokio::spawn(async move {
            let mut stream = TcpStream::connect(address).await.expect("connects");
            stream.write_all(&wire).await.expect("writes");
        });
        let (stream, _) = listener.accept().await.expect("accepts");
        FrameReader::new(stream.into_split().0, 64 << 20)
    }

    #[tokio::test]
    async fn raw_bodies_large_and_small_arrive_whole_and_in_order() {
        let large: Vec<u8> = (0..recycle::LARGE * 3 + 7).map(|i| (i % 251) as u8).collect();
        let mut wire = Vec::new();
        encode_raw(b"small", &mut wire).expect("encodes");
        encode_raw(&large, &mut wire).expect("encodes");
        encode_message(&7u32, &mut wire).expect("encodes");
        let mut reader = reader_of(wire).await;
        assert_eq!(&reader.next_raw().await.expect("small body")[..], b"small");
        assert!(reader.next_raw().await.expect("large body")[..] == large[..]);
        assert_eq!(reader.next_message().await.expect("the message after it"), [7]);
        assert!(matches!(reader.next_raw().await, Err(Closed::Eof)));
    }

    #[tokio::test]
    async fn a_large_body_cut_short_or_a_message_where_bytes_were_due_is_an_error() {
        let header_only = raw_header(recycle::LARGE as u32 * 2).to_vec();
        let mut reader = reader_of(header_only).await;
        assert!(matches!(reader.next_raw().await, Err(Closed::Truncated)));

        let mut wire = raw_header(recycle::LARGE as u32 * 2).to_vec();
        wire.extend_from_slice(&[1; 1000]);
        let mut reader = reader_of(wire).await;
        assert!(matches!(reader.next_raw().await, Err(Closed::Truncated)));

        let mut wire = Vec::new();
        encode_message(&7u32, &mut wire).expect("encodes");
        let mut reader = reader_of(wire).await;
        assert!(matches!(reader.next_raw().await, Err(Closed::Unexpected(_))));
    }
}
