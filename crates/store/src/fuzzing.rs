//! Entry points for the fuzz targets (feature `fuzzing`): the decoders of what the embedded store
//! reads back from its file, which a damaged disk may have changed.

/// Decodes `bytes` as a stored order record, which must not panic; a record that decodes without
/// a result encodes back to the same bytes.
pub fn order_record(bytes: &[u8]) {
    crate::redb_store::fuzz_order_record(bytes);
}
