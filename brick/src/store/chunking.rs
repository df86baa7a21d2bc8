//! Content-defined chunking (FastCDC) and chunk reads.
//!
//! A file is cut where its content says so, not at fixed offsets, so an
//! insertion shifts only the chunks around it. Each chunk is named by its
//! blake3 hash; a receiver asks only for the chunks it does not hold in any
//! file. Files are streamed: memory stays bounded by the largest chunk.

use std::fs::File;
use std::io::{self, Read, Write};
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
    let mut buf = Vec::new();
    read_verified_into(file, offset, len, hash, &mut buf)?;
    Ok(buf)
}

/// [`read_verified`] into a buffer the caller reuses.
pub fn read_verified_into(
    file: &File,
    offset: u64,
    len: u32,
    hash: &[u8; 32],
    buf: &mut Vec<u8>,
) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    buf.resize(len as usize, 0);
    file.read_exact_at(buf, offset)?;
    if blake3::hash(buf).as_bytes() != hash {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "chunk changed on disk",
        ));
    }
    Ok(())
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

/// How much content held locally one blocking job of
/// [`Assembly::copy_held`] copies at most.
pub const COPY_RUN: u64 = 64 << 20;

/// A file's content written chunk by chunk, hashed as it goes: how a
/// receiver (a brick or a mount) builds a version in its temp file from
/// chunks it fetches and chunks it already holds.
pub struct Assembly {
    out: io::BufWriter<File>,
    whole: blake3::Hasher,
}

/// Why a run of held chunks could not be copied.
#[derive(Debug)]
pub enum CopyError {
    /// The chunk at this index of the run is no longer where it was said
    /// to be (its file is gone or changed).
    Stale(usize),
    /// Writing the temp file failed.
    Write(io::Error),
}

/// Why an assembled file is not the version it should be.
#[derive(Debug)]
pub enum Finish {
    /// The content does not hash to the version's hash.
    Mismatch,
    /// Writing the temp file failed.
    Write(io::Error),
}

impl Assembly {
    /// Writes into `file` through a buffer of `cap` bytes.
    pub fn new(file: File, cap: usize) -> Self {
        Self {
            out: io::BufWriter::with_capacity(cap, file),
            whole: blake3::Hasher::new(),
        }
    }

    /// Appends `data` (already checked by the caller).
    pub fn add(&mut self, data: &[u8]) -> io::Result<()> {
        self.whole.update(data);
        self.out.write_all(data)
    }

    /// Appends chunks held in local files (blocking: run it off the async
    /// executor): each `(chunk, file, offset)` is read from the file `open`
    /// gives for its key (opened once while consecutive chunks share it)
    /// and checked against its hash before it is written.
    pub fn copy_held<K: PartialEq>(
        &mut self,
        run: &[(ChunkRef, K, u64)],
        mut open: impl FnMut(&K) -> io::Result<File>,
    ) -> Result<(), CopyError> {
        let mut current: Option<(&K, File)> = None;
        let mut buf = Vec::new();
        for (k, (c, key, off)) in run.iter().enumerate() {
            if current
                .as_ref()
                .is_none_or(|(open_key, _)| *open_key != key)
            {
                let f = open(key).map_err(|_| CopyError::Stale(k))?;
                current = Some((key, f));
            }
            let Some((_, f)) = current.as_ref() else {
                return Err(CopyError::Stale(k));
            };
            read_verified_into(f, *off, c.len, &c.hash, &mut buf)
                .map_err(|_| CopyError::Stale(k))?;
            self.add(&buf).map_err(CopyError::Write)?;
        }
        Ok(())
    }

    /// The written file, if its content hashes to `hash`.
    pub fn finish(self, hash: &[u8; 32]) -> Result<File, Finish> {
        if self.whole.finalize().as_bytes() != hash {
            return Err(Finish::Mismatch);
        }
        self.out
            .into_inner()
            .map_err(|e| Finish::Write(e.into_error()))
    }
}
