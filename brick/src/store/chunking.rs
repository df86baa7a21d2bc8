//! Content-defined chunking (FastCDC) and chunk reads.
//!
//! A file is cut where its content says so, not at fixed offsets, so an
//! insertion shifts only the chunks around it. Each chunk is named by its
//! blake3 hash; a receiver asks only for the chunks it does not hold in any
//! file. Files are streamed: memory stays bounded by the largest chunk.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;

use super::types::ChunkRef;

/// Smallest chunk.
pub const MIN_CHUNK: u32 = 16 * 1024;
/// Average chunk.
pub const AVG_CHUNK: u32 = 64 * 1024;
/// Largest chunk.
pub const MAX_CHUNK: u32 = 256 * 1024;

/// Hash and chunk list of a file's content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunked {
    /// blake3 of the whole content.
    pub hash: [u8; 32],
    /// Size in bytes.
    pub size: u64,
    /// The chunks, in order.
    pub chunks: Vec<ChunkRef>,
}

/// Chunks and hashes everything `reader` yields.
pub fn chunk_reader<R: Read>(reader: R) -> io::Result<Chunked> {
    let mut whole = blake3::Hasher::new();
    let mut chunks = Vec::new();
    let mut size = 0u64;
    let cdc = fastcdc::v2020::StreamCDC::new(reader, MIN_CHUNK, AVG_CHUNK, MAX_CHUNK);
    for c in cdc {
        let c = c.map_err(|e| match e {
            fastcdc::v2020::Error::IoError(io) => io,
            other => io::Error::other(other.to_string()),
        })?;
        whole.update(&c.data);
        size += c.data.len() as u64;
        chunks.push(ChunkRef {
            hash: *blake3::hash(&c.data).as_bytes(),
            len: c.data.len() as u32,
        });
    }
    Ok(Chunked {
        hash: *whole.finalize().as_bytes(),
        size,
        chunks,
    })
}

/// Chunks and hashes a file.
pub fn chunk_file(path: &Path) -> io::Result<Chunked> {
    chunk_reader(io::BufReader::with_capacity(1 << 20, File::open(path)?))
}

/// Offsets of each chunk in a list.
pub fn offsets(chunks: &[ChunkRef]) -> Vec<u64> {
    let mut off = 0u64;
    chunks
        .iter()
        .map(|c| {
            let o = off;
            off += u64::from(c.len);
            o
        })
        .collect()
}

/// Reads `len` bytes at `offset` from `file` and checks they hash to `hash`.
pub fn read_verified(
    file: &mut File,
    offset: u64,
    len: u32,
    hash: &[u8; 32],
) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; len as usize];
    file.seek(SeekFrom::Start(offset))?;
    file.read_exact(&mut buf)?;
    if blake3::hash(&buf).as_bytes() != hash {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "chunk changed on disk",
        ));
    }
    Ok(buf)
}

/// Encodes a chunk list for the database (36 bytes per chunk).
pub fn encode_list(chunks: &[ChunkRef]) -> Vec<u8> {
    let mut out = Vec::with_capacity(chunks.len() * 36);
    for c in chunks {
        out.extend_from_slice(&c.hash);
        out.extend_from_slice(&c.len.to_le_bytes());
    }
    out
}

/// Decodes [`encode_list`]; `None` if malformed.
pub fn decode_list(bytes: &[u8]) -> Option<Vec<ChunkRef>> {
    if bytes.len() % 36 != 0 {
        return None;
    }
    bytes
        .chunks_exact(36)
        .map(|b| {
            let mut hash = [0u8; 32];
            hash.copy_from_slice(&b[..32]);
            let len = u32::from_le_bytes(b[32..36].try_into().ok()?);
            Some(ChunkRef { hash, len })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(n: usize, seed: u64) -> Vec<u8> {
        let mut x = seed;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    #[test]
    fn small_change_touches_few_chunks() {
        let mut a = data(4 << 20, 1);
        let ca = chunk_reader(&a[..]).unwrap();
        assert_eq!(ca.size, a.len() as u64);
        assert_eq!(ca.hash, *blake3::hash(&a).as_bytes());
        for b in &mut a[2_000_000..2_000_100] {
            *b = 0;
        }
        let cb = chunk_reader(&a[..]).unwrap();
        let have: std::collections::HashSet<_> = ca.chunks.iter().map(|c| c.hash).collect();
        let new_bytes: u64 = cb
            .chunks
            .iter()
            .filter(|c| !have.contains(&c.hash))
            .map(|c| u64::from(c.len))
            .sum();
        assert!(new_bytes <= 3 * u64::from(MAX_CHUNK), "{new_bytes}");
    }

    #[test]
    fn list_round_trip() {
        let c = chunk_reader(&data(300_000, 2)[..]).unwrap();
        assert_eq!(decode_list(&encode_list(&c.chunks)).unwrap(), c.chunks);
        assert!(decode_list(&[1, 2, 3]).is_none());
    }

    #[test]
    fn empty_file() {
        let c = chunk_reader(&[][..]).unwrap();
        assert_eq!(c.size, 0);
        assert!(c.chunks.is_empty());
    }
}
