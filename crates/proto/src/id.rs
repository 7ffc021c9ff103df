//! Identifiers (wire spec §1.11): workerId from a worker name, workloadId from a workload name and
//! back, and the hex pattern every identifier on the wire must match.

use afallon_crypto::sha256;

/// The workerId of a worker called `name`: lower-case hex of SHA-256 of the UTF-8 name.
///
/// ```
/// assert_eq!(
///     afallon_proto::worker_id_from_name("singleton-worker-1"),
///     "0b03616a46ea9cf574f3f8eedc93a62c691a60dbd3783427c0243bacfe5bba94"
/// );
/// ```
pub fn worker_id_from_name(name: &str) -> String {
    sha256(name.as_bytes()).to_hex()
}

/// The requesterId that names the holder of `key`: lower-case hex of SHA-256 of the key's
/// uncompressed SEC1 encoding (65 bytes). A requester that signs its orders with `key` under
/// this id can be told apart from one that only writes the id: it is how a tenant of a worker
/// pool is named (docs/pools.md, "Tenants").
///
/// ```
/// use afallon_crypto::EcdsaSigningKey;
/// let key = EcdsaSigningKey::from_scalar_bytes(&[7; 32]).unwrap();
/// let id = afallon_proto::requester_id_for_key(&key.verifying_key());
/// assert!(afallon_proto::is_requester_key_id(&id));
/// let other = EcdsaSigningKey::from_scalar_bytes(&[8; 32]).unwrap();
/// assert_ne!(id, afallon_proto::requester_id_for_key(&other.verifying_key()));
/// assert!(!afallon_proto::is_requester_key_id(&id.to_uppercase()));
/// ```
pub fn requester_id_for_key(key: &afallon_crypto::EcdsaVerifyingKey) -> String {
    sha256(&key.to_sec1_uncompressed()).to_hex()
}

/// Whether `id` has the form [`requester_id_for_key`] gives: 64 lower-case hex digits.
pub fn is_requester_key_id(id: &str) -> bool {
    id.len() == 64 && id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The workloadId of a workload called `name`: lower-case hex of the UTF-8 name.
///
/// ```
/// assert_eq!(afallon_proto::workload_id_from_name("echo-result"), "6563686f2d726573756c74");
/// ```
pub fn workload_id_from_name(name: &str) -> String {
    hex::encode(name.as_bytes())
}

/// The workload name a workloadId stands for, as the enclave decodes it: plain hex (either case,
/// no `0x`) of UTF-8. `None` when it is not.
///
/// ```
/// assert_eq!(afallon_proto::workload_name_from_id("6563686F2d726573756c74").as_deref(), Some("echo-result"));
/// assert_eq!(afallon_proto::workload_name_from_id("0x6563"), None);
/// ```
pub fn workload_name_from_id(workload_id: &str) -> Option<String> {
    let bytes = hex::decode(workload_id).ok()?;
    String::from_utf8(bytes).ok()
}

/// Whether `value` matches the schema's hex pattern `^(0[x|X])?[0-9a-fA-F]+$`: at least one hex
/// digit, optionally after `0x`, `0X` or (as the pattern is written) `0|`.
pub fn is_schema_hex(value: &str) -> bool {
    let digits = match value.as_bytes() {
        [b'0', b'x' | b'X' | b'|', rest @ ..] if !rest.is_empty() => rest,
        all => all,
    };
    !digits.is_empty() && digits.iter().all(u8::is_ascii_hexdigit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_spec_identifiers() {
        assert_eq!(
            worker_id_from_name("kme-worker-1"),
            "ad8ef7abd63076b74175d49e3db3087da1c6f46ff8912a87cb354c816a6ad26b"
        );
        for (name, id) in [
            ("echo-result", "6563686f2d726573756c74"),
            ("heart-disease-eval", "68656172742d646973656173652d6576616c"),
            ("inside-out-eval", "696e736964652d6f75742d6576616c"),
            ("simple-wallet", "73696d706c652d77616c6c6574"),
        ] {
            assert_eq!(workload_id_from_name(name), id);
            assert_eq!(workload_name_from_id(id).as_deref(), Some(name));
        }
    }

    #[test]
    fn schema_hex_pattern() {
        for ok in ["0", "abcDEF09", "0x1", "0X1f", "0|ab", "00"] {
            assert!(is_schema_hex(ok), "{ok}");
        }
        for bad in ["", "0x", "xyz", "12 34", "-1", "0xg", "abc\n"] {
            assert!(!is_schema_hex(bad), "{bad:?}");
        }
    }
}
