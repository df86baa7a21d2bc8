//! Length-prefixed frames over any byte stream (QUIC streams, the control
//! socket).
//!
//! A frame is a 4-byte big-endian length followed by that many bytes. The
//! length is checked against a hard cap before anything is allocated, so a
//! hostile peer announcing a 1 GiB frame costs nothing.

use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::wire::codec::{self, CodecError};

/// Largest frame accepted, in bytes (a chunk of content plus its header fits
/// well within it).
pub const MAX_FRAME: usize = codec::MAX_MESSAGE;

/// Why a frame could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The stream failed or ended early.
    #[error("stream: {0}")]
    Io(#[from] std::io::Error),
    /// The stream ended cleanly before a frame started.
    #[error("stream closed")]
    Closed,
    /// The announced length exceeds [`MAX_FRAME`].
    #[error("frame of {got} bytes exceeds the limit of {MAX_FRAME}")]
    TooLarge {
        /// Announced length.
        got: usize,
    },
    /// The frame is not a valid message.
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// The frame is not valid JSON (control socket).
    #[error("malformed message: {0}")]
    Json(String),
}

/// Writes one raw frame.
pub async fn write_raw<W: AsyncWrite + Unpin>(w: &mut W, bytes: &[u8]) -> Result<(), FrameError> {
    if bytes.len() > MAX_FRAME {
        return Err(FrameError::TooLarge { got: bytes.len() });
    }
    let len = u32::try_from(bytes.len()).map_err(|_| FrameError::TooLarge { got: bytes.len() })?;
    w.write_all(&len.to_be_bytes()).await?;
    w.write_all(bytes).await?;
    Ok(())
}

/// Reads one raw frame; `Closed` if the stream ended before it started.
pub async fn read_raw<R: AsyncRead + Unpin>(r: &mut R) -> Result<Vec<u8>, FrameError> {
    let mut len = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        let n = r.read(&mut len[got..]).await?;
        if n == 0 {
            return Err(if got == 0 {
                FrameError::Closed
            } else {
                FrameError::Io(std::io::ErrorKind::UnexpectedEof.into())
            });
        }
        got += n;
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge { got: len });
    }
    let mut buf = vec![0u8; len];
    r.read_exact(&mut buf).await?;
    Ok(buf)
}

/// Writes one message (bincode).
pub async fn write_msg<W: AsyncWrite + Unpin, T: Serialize>(
    w: &mut W,
    msg: &T,
) -> Result<(), FrameError> {
    write_raw(w, &codec::encode(msg)?).await
}

/// Reads one message (bincode).
pub async fn read_msg<R: AsyncRead + Unpin, T: DeserializeOwned>(
    r: &mut R,
) -> Result<T, FrameError> {
    Ok(codec::decode(&read_raw(r).await?)?)
}

/// Writes one JSON message (control socket).
pub async fn write_json<W: AsyncWrite + Unpin, T: Serialize>(
    w: &mut W,
    msg: &T,
) -> Result<(), FrameError> {
    let bytes = serde_json::to_vec(msg).map_err(|e| FrameError::Json(e.to_string()))?;
    write_raw(w, &bytes).await
}

/// Reads one JSON message (control socket).
pub async fn read_json<R: AsyncRead + Unpin, T: DeserializeOwned>(
    r: &mut R,
) -> Result<T, FrameError> {
    serde_json::from_slice(&read_raw(r).await?).map_err(|e| FrameError::Json(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn oversized_header_is_refused_without_allocating() {
        let mut input: &[u8] = &[0x40, 0, 0, 0, 1, 2, 3];
        match read_raw(&mut input).await {
            Err(FrameError::TooLarge { got }) => assert_eq!(got, 1 << 30),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn truncated_and_closed() {
        let mut empty: &[u8] = &[];
        assert!(matches!(
            read_raw(&mut empty).await,
            Err(FrameError::Closed)
        ));
        let mut short: &[u8] = &[0, 0, 0, 9, 1];
        assert!(matches!(read_raw(&mut short).await, Err(FrameError::Io(_))));
    }

    #[tokio::test]
    async fn round_trip() {
        let mut buf = Vec::new();
        write_msg(&mut buf, &("hi".to_string(), 3u64))
            .await
            .unwrap();
        let mut r = &buf[..];
        let v: (String, u64) = read_msg(&mut r).await.unwrap();
        assert_eq!(v, ("hi".to_string(), 3));
    }

    proptest::proptest! {
        #[test]
        fn decoder_never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300)) {
            let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
            rt.block_on(async {
                let mut r = &bytes[..];
                let _ = read_msg::<_, crate::wire::proto::Request>(&mut r).await;
            });
        }
    }
}
