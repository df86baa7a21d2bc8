//! The one module that names bincode.
//!
//! Every wire message goes through [`encode`] and [`decode`], which fix the
//! bincode configuration (little endian, variable-length integers) and the
//! decode size limit, so the format can be swapped in one place. bincode is
//! not self-describing: evolve messages by appending enum variants, never by
//! reordering or removing them.

use serde::de::DeserializeOwned;
use serde::Serialize;

/// Largest encoded message accepted by [`decode`], in bytes.
pub const MAX_MESSAGE: usize = 8 << 20;

/// Why a message could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The value could not be encoded.
    #[error("encode: {0}")]
    Encode(String),
    /// The bytes are not a valid message.
    #[error("malformed message: {0}")]
    Decode(String),
    /// Bytes were left over after the message.
    #[error("malformed message: {0} trailing bytes")]
    Trailing(usize),
}

fn config() -> bincode::config::Configuration<
    bincode::config::LittleEndian,
    bincode::config::Varint,
    bincode::config::Limit<MAX_MESSAGE>,
> {
    bincode::config::standard().with_limit::<MAX_MESSAGE>()
}

/// Encodes a message.
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, CodecError> {
    bincode::serde::encode_to_vec(value, config()).map_err(|e| CodecError::Encode(e.to_string()))
}

/// Decodes a message that must fill `bytes` exactly.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    let (value, used) = bincode::serde::decode_from_slice(bytes, config())
        .map_err(|e| CodecError::Decode(e.to_string()))?;
    if used != bytes.len() {
        return Err(CodecError::Trailing(bytes.len() - used));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_trailing() {
        let v = (7u32, "x".to_string(), vec![1u8, 2]);
        let mut b = encode(&v).unwrap();
        assert_eq!(decode::<(u32, String, Vec<u8>)>(&b).unwrap(), v);
        b.push(0);
        assert!(decode::<(u32, String, Vec<u8>)>(&b).is_err());
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for len in 0..64usize {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 37 % 251) as u8).collect();
            let _ = decode::<(String, Vec<u64>)>(&bytes);
        }
        // A huge declared length must not allocate.
        let bytes = [0xfc, 0xff, 0xff, 0xff, 0xff];
        assert!(decode::<Vec<u8>>(&bytes).is_err());
    }
}
