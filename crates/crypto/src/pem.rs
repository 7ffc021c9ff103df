//! PEM armour: reading it leniently (CRLF, surrounding text, wrapped or unwrapped base64) and
//! writing it exactly as OpenSSL does (64-character lines and a trailing newline), because the
//! exact PEM string is hashed and signed on the wire (wire spec §3.2).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use crate::KeyError;

/// One PEM block: its label (`PUBLIC KEY`, `RSA PUBLIC KEY`, ...) and the DER it armours.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PemBlock {
    /// The label between `-----BEGIN ` and `-----`.
    pub label: String,
    /// The decoded contents.
    pub der: Vec<u8>,
}

/// Reads the first PEM block in `text`.
///
/// Text before the `BEGIN` line is ignored, as OpenSSL ignores it. The base64 body may use any
/// line length and LF or CRLF line ends; header lines (`Proc-Type:` and the like) are refused.
///
/// # Errors
/// [`KeyError::MalformedPem`] when there is no complete block, the labels differ, or the body is
/// not base64.
pub fn decode(text: &str) -> Result<PemBlock, KeyError> {
    const BEGIN: &str = "-----BEGIN ";
    const DASHES: &str = "-----";
    let start = text.find(BEGIN).ok_or(KeyError::MalformedPem)?;
    let after_begin = &text[start + BEGIN.len()..];
    let label_end = after_begin.find(DASHES).ok_or(KeyError::MalformedPem)?;
    let label = &after_begin[..label_end];
    if label.is_empty() || label.contains(['\n', '\r', '-']) {
        return Err(KeyError::MalformedPem);
    }
    let body_and_rest = &after_begin[label_end + DASHES.len()..];
    let end_marker = format!("-----END {label}-----");
    let body_end = body_and_rest.find(&end_marker).ok_or(KeyError::MalformedPem)?;
    let body = &body_and_rest[..body_end];
    if body.contains(':') {
        return Err(KeyError::MalformedPem);
    }
    let compact: String = body.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    let der = STANDARD.decode(compact.as_bytes()).map_err(|_| KeyError::MalformedPem)?;
    if der.is_empty() {
        return Err(KeyError::MalformedPem);
    }
    Ok(PemBlock { label: label.to_owned(), der })
}

/// Reads every PEM block in `text`, in order (a certificate chain).
///
/// # Errors
/// [`KeyError::MalformedPem`] when there is none, or any block is malformed as [`decode`] says.
pub fn decode_all(text: &str) -> Result<Vec<PemBlock>, KeyError> {
    let mut blocks = Vec::new();
    let mut rest = text;
    while rest.contains("-----BEGIN ") {
        let block = decode(rest)?;
        let end_marker = format!("-----END {}-----", block.label);
        let end = rest.find(&end_marker).ok_or(KeyError::MalformedPem)? + end_marker.len();
        rest = &rest[end..];
        blocks.push(block);
    }
    if blocks.is_empty() {
        return Err(KeyError::MalformedPem);
    }
    Ok(blocks)
}

/// Writes `der` as a PEM block the way OpenSSL's `PEM_write_bio_*` does: base64 in 64-character
/// lines, LF line ends, and a newline after the `END` line.
pub fn encode(label: &str, der: &[u8]) -> String {
    let body = STANDARD.encode(der);
    let mut out = String::with_capacity(body.len() + body.len() / 64 + 2 * label.len() + 40);
    out.push_str("-----BEGIN ");
    out.push_str(label);
    out.push_str("-----\n");
    for line in body.as_bytes().chunks(64) {
        // base64 output is ASCII, so every chunk is valid UTF-8.
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str("-----END ");
    out.push_str(label);
    out.push_str("-----\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_wraps_at_64_and_ends_with_newline() {
        let pem = encode("PUBLIC KEY", &[0xab; 100]);
        let lines: Vec<&str> = pem.lines().collect();
        assert_eq!(lines[0], "-----BEGIN PUBLIC KEY-----");
        // 100 bytes are 136 base64 characters: 64 + 64 + 8.
        assert_eq!((lines[1].len(), lines[2].len(), lines[3].len()), (64, 64, 8));
        assert_eq!(lines[4], "-----END PUBLIC KEY-----");
        assert!(pem.ends_with("-----\n"));
    }

    #[test]
    fn decode_all_reads_a_chain_in_order() {
        let chain = format!("{}{}", encode("CERTIFICATE", &[1, 2]), encode("CERTIFICATE", &[3]));
        let blocks = decode_all(&chain).expect("two blocks");
        assert_eq!(blocks.iter().map(|b| b.der.clone()).collect::<Vec<_>>(), [vec![1, 2], vec![3]]);
        assert_eq!(decode_all("no pem here"), Err(KeyError::MalformedPem));
        let broken = format!("{}-----BEGIN CERTIFICATE-----\n!!\n", encode("CERTIFICATE", &[1]));
        assert_eq!(decode_all(&broken), Err(KeyError::MalformedPem));
    }

    #[test]
    fn decode_is_lenient_about_layout() {
        let pem = encode("PUBLIC KEY", &[1, 2, 3, 4, 5]);
        let crlf = format!("junk before\r\n{}", pem.replace('\n', "\r\n"));
        for text in [pem.as_str(), crlf.as_str(), pem.trim_end()] {
            let block = decode(text).expect("decode");
            assert_eq!(block.label, "PUBLIC KEY");
            assert_eq!(block.der, vec![1, 2, 3, 4, 5]);
        }
    }

    #[test]
    fn decode_refuses_broken_blocks() {
        for text in [
            "",
            "-----BEGIN PUBLIC KEY-----\nAQID\n",
            "-----BEGIN PUBLIC KEY-----\nAQID\n-----END RSA PUBLIC KEY-----\n",
            "-----BEGIN PUBLIC KEY-----\n!!!!\n-----END PUBLIC KEY-----\n",
            "-----BEGIN PUBLIC KEY-----\nProc-Type: 4\nAQID\n-----END PUBLIC KEY-----\n",
            "-----BEGIN PUBLIC KEY-----\n-----END PUBLIC KEY-----\n",
        ] {
            assert_eq!(decode(text), Err(KeyError::MalformedPem), "{text:?}");
        }
    }
}
