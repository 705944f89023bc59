//! The tokio-util [`Decoder`] around a protocol [`Codec`]'s framing.
//!
//! The codec says where a frame is; this adapter turns that into items for a
//! `FramedRead`, enforces the byte cap the codec cannot (a stream of bytes that never
//! completes a frame), and reports resyncs as items rather than errors because the
//! stream goes on after them.

use bytes::{Buf, BytesMut};
use protocols::error::hex_excerpt;
use protocols::{Codec, FrameError, Framing};
use tokio_util::codec::Decoder;

/// One step of the byte stream.
#[derive(Debug)]
pub enum FrameEvent {
    Frame(BytesMut),
    /// Bytes that can never start a frame were dropped; the stream continues.
    Resync {
        discarded: BytesMut,
        error: FrameError,
    },
}

/// Why the stream cannot go on.
#[derive(Debug, thiserror::Error)]
pub enum FramingError {
    #[error("unrecoverable framing error: {error} ({excerpt})")]
    Fatal { error: FrameError, excerpt: String },
    #[error("{buffered} bytes buffered without a complete frame (cap {cap}) ({excerpt})")]
    Oversize {
        buffered: usize,
        cap: usize,
        excerpt: String,
    },
    #[error("connection closed inside a frame ({excerpt})")]
    Truncated { excerpt: String },
    #[error("codec returned invalid frame bounds {start}..{end} for {len} bytes")]
    Bounds { start: usize, end: usize, len: usize },
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

impl FramingError {
    /// The `outcome` label for the frames counter.
    pub fn outcome(&self) -> &'static str {
        match self {
            FramingError::Oversize { .. } => "oversize",
            FramingError::Truncated { .. } => "truncated",
            FramingError::Io(_) => "io",
            FramingError::Fatal { .. } | FramingError::Bounds { .. } => "fatal",
        }
    }
}

#[derive(Debug)]
pub struct CodecFramer {
    pub codec: Box<dyn Codec>,
    max_frame: usize,
}

impl CodecFramer {
    pub fn new(codec: Box<dyn Codec>, max_frame: usize) -> Self {
        CodecFramer { codec, max_frame }
    }

    fn step(&mut self, buf: &mut BytesMut, eof: bool) -> Result<Option<FrameEvent>, FramingError> {
        if buf.is_empty() {
            return Ok(None);
        }
        match self.codec.frame(buf, eof) {
            Framing::Frame { start, end } => {
                // A codec bug must not loop forever or panic the connection task.
                if end == 0 || start > end || end > buf.len() {
                    return Err(FramingError::Bounds {
                        start,
                        end,
                        len: buf.len(),
                    });
                }
                if end - start > self.max_frame {
                    return Err(FramingError::Oversize {
                        buffered: end - start,
                        cap: self.max_frame,
                        excerpt: hex_excerpt(&buf[..end]),
                    });
                }
                let mut frame = buf.split_to(end);
                frame.advance(start);
                Ok(Some(FrameEvent::Frame(frame)))
            }
            Framing::Incomplete if buf.len() > self.max_frame => Err(FramingError::Oversize {
                buffered: buf.len(),
                cap: self.max_frame,
                excerpt: hex_excerpt(buf),
            }),
            Framing::Incomplete if eof => {
                if buf.iter().all(u8::is_ascii_whitespace) {
                    buf.clear();
                    return Ok(None);
                }
                let excerpt = hex_excerpt(buf);
                buf.clear();
                Err(FramingError::Truncated { excerpt })
            }
            Framing::Incomplete => Ok(None),
            Framing::Resync { discard, error } => {
                let discarded = buf.split_to(discard.clamp(1, buf.len()));
                Ok(Some(FrameEvent::Resync { discarded, error }))
            }
            Framing::Fatal(error) => Err(FramingError::Fatal {
                error,
                excerpt: hex_excerpt(buf),
            }),
        }
    }
}

impl Decoder for CodecFramer {
    type Item = FrameEvent;
    type Error = FramingError;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<FrameEvent>, FramingError> {
        self.step(buf, false)
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<FrameEvent>, FramingError> {
        self.step(buf, true)
    }
}
