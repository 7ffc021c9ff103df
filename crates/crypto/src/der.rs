//! A minimal DER reader and writer: just enough ASN.1 to take SubjectPublicKeyInfo apart and to
//! build one.
//!
//! Everything here reads bytes that come from outside (PEM blocks in worker records and requests),
//! so every length is checked and nothing panics on malformed input.

use crate::KeyError;

pub(crate) const TAG_INTEGER: u8 = 0x02;
pub(crate) const TAG_BIT_STRING: u8 = 0x03;
pub(crate) const TAG_OCTET_STRING: u8 = 0x04;
pub(crate) const TAG_NULL: u8 = 0x05;
pub(crate) const TAG_OID: u8 = 0x06;
pub(crate) const TAG_SEQUENCE: u8 = 0x30;

/// rsaEncryption, 1.2.840.113549.1.1.1.
pub(crate) const OID_RSA_ENCRYPTION: &[u8] =
    &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
/// id-ecPublicKey, 1.2.840.10045.2.1.
pub(crate) const OID_EC_PUBLIC_KEY: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
/// secp256k1, 1.3.132.0.10.
pub(crate) const OID_SECP256K1: &[u8] = &[0x2b, 0x81, 0x04, 0x00, 0x0a];
/// prime-field, 1.2.840.10045.1.1.
pub(crate) const OID_PRIME_FIELD: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x01, 0x01];

/// Reads DER elements one after another from a byte slice.
#[derive(Debug, Clone)]
pub(crate) struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Self { rest: bytes }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    /// The tag of the next element, if any.
    pub(crate) fn peek_tag(&self) -> Option<u8> {
        self.rest.first().copied()
    }

    /// Reads one element and returns its tag and contents.
    pub(crate) fn read_any(&mut self) -> Result<(u8, &'a [u8]), KeyError> {
        let malformed = || KeyError::MalformedDer;
        let (&tag, after_tag) = self.rest.split_first().ok_or_else(malformed)?;
        if tag & 0x1f == 0x1f {
            // High tag numbers never occur in the structures read here.
            return Err(malformed());
        }
        let (&first, mut after_len) = after_tag.split_first().ok_or_else(malformed)?;
        let len = if first < 0x80 {
            usize::from(first)
        } else {
            let count = usize::from(first & 0x7f);
            if count == 0 || count > 4 || after_len.len() < count {
                return Err(malformed());
            }
            let (len_bytes, rest) = after_len.split_at(count);
            after_len = rest;
            let len = len_bytes.iter().fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
            // DER wants the shortest length encoding.
            if len < 0x80 || len_bytes[0] == 0 {
                return Err(malformed());
            }
            len
        };
        if after_len.len() < len {
            return Err(malformed());
        }
        let (contents, rest) = after_len.split_at(len);
        self.rest = rest;
        Ok((tag, contents))
    }

    /// Reads one element that must carry `tag` and returns its contents.
    pub(crate) fn read(&mut self, tag: u8) -> Result<&'a [u8], KeyError> {
        match self.read_any()? {
            (t, contents) if t == tag => Ok(contents),
            _ => Err(KeyError::MalformedDer),
        }
    }

    /// Reads an element that must be the last one.
    pub(crate) fn read_last(mut self, tag: u8) -> Result<&'a [u8], KeyError> {
        let contents = self.read(tag)?;
        if self.is_empty() { Ok(contents) } else { Err(KeyError::MalformedDer) }
    }
}

/// A SubjectPublicKeyInfo taken apart (RFC 5280 §4.1).
#[derive(Debug, Clone)]
pub(crate) struct Spki<'a> {
    /// Contents of the algorithm OID.
    pub(crate) algorithm: &'a [u8],
    /// The algorithm parameters, tag and contents, if present.
    pub(crate) parameters: Option<(u8, &'a [u8])>,
    /// The public key bits (without the unused-bits byte).
    pub(crate) key: &'a [u8],
}

impl<'a> Spki<'a> {
    pub(crate) fn parse(der: &'a [u8]) -> Result<Self, KeyError> {
        let outer = Reader::new(der).read_last(TAG_SEQUENCE)?;
        let mut fields = Reader::new(outer);
        let mut algorithm_identifier = Reader::new(fields.read(TAG_SEQUENCE)?);
        let bits = fields.read_last(TAG_BIT_STRING)?;
        let algorithm = algorithm_identifier.read(TAG_OID)?;
        let parameters = if algorithm_identifier.is_empty() {
            None
        } else {
            let parameters = algorithm_identifier.read_any()?;
            if !algorithm_identifier.is_empty() {
                return Err(KeyError::MalformedDer);
            }
            Some(parameters)
        };
        let (&unused_bits, key) = bits.split_first().ok_or(KeyError::MalformedDer)?;
        if unused_bits != 0 {
            return Err(KeyError::MalformedDer);
        }
        Ok(Self { algorithm, parameters, key })
    }
}

/// Appends one DER element to `out`.
pub(crate) fn write_element(tag: u8, contents: &[u8], out: &mut Vec<u8>) {
    out.push(tag);
    let len = contents.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|&&b| b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(contents);
}

/// Builds a SubjectPublicKeyInfo from its parts.
pub(crate) fn write_spki(algorithm: &[u8], parameters: (u8, &[u8]), key: &[u8]) -> Vec<u8> {
    let mut algorithm_identifier = Vec::with_capacity(algorithm.len() + parameters.1.len() + 4);
    write_element(TAG_OID, algorithm, &mut algorithm_identifier);
    write_element(parameters.0, parameters.1, &mut algorithm_identifier);
    let mut bits = Vec::with_capacity(key.len() + 1);
    bits.push(0);
    bits.extend_from_slice(key);
    let mut body = Vec::with_capacity(algorithm_identifier.len() + bits.len() + 8);
    write_element(TAG_SEQUENCE, &algorithm_identifier, &mut body);
    write_element(TAG_BIT_STRING, &bits, &mut body);
    let mut out = Vec::with_capacity(body.len() + 4);
    write_element(TAG_SEQUENCE, &body, &mut out);
    out
}

/// A big-endian unsigned integer with its leading zero bytes removed, so that two encodings of
/// one number compare equal.
pub(crate) fn trim_leading_zeros(bytes: &[u8]) -> &[u8] {
    let skip = bytes.iter().take_while(|&&b| b == 0).count();
    &bytes[skip..]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_lengths_round_trip() {
        for len in [0usize, 1, 127, 128, 255, 256, 70_000] {
            let contents = vec![7u8; len];
            let mut out = Vec::new();
            write_element(TAG_OCTET_STRING, &contents, &mut out);
            let mut reader = Reader::new(&out);
            assert_eq!(reader.read(TAG_OCTET_STRING).expect("read"), &contents[..]);
            assert!(reader.is_empty());
        }
    }

    #[test]
    fn rejects_truncation_and_non_minimal_lengths() {
        assert_eq!(Reader::new(&[0x04, 0x05, 1, 2]).read_any(), Err(KeyError::MalformedDer));
        assert_eq!(
            Reader::new(&[0x04, 0x81, 0x05, 1, 2, 3, 4, 5]).read_any(),
            Err(KeyError::MalformedDer)
        );
        assert_eq!(Reader::new(&[0x04]).read_any(), Err(KeyError::MalformedDer));
        assert_eq!(Reader::new(&[0x1f, 0x00]).read_any(), Err(KeyError::MalformedDer));
    }

    #[test]
    fn spki_round_trip() {
        let der = write_spki(OID_EC_PUBLIC_KEY, (TAG_OID, OID_SECP256K1), &[4, 1, 2]);
        let spki = Spki::parse(&der).expect("parse");
        assert_eq!(spki.algorithm, OID_EC_PUBLIC_KEY);
        assert_eq!(spki.parameters, Some((TAG_OID, OID_SECP256K1)));
        assert_eq!(spki.key, &[4, 1, 2]);
        let mut trailing = der.clone();
        trailing.push(0);
        assert_eq!(Spki::parse(&trailing).err(), Some(KeyError::MalformedDer));
    }
}
