//! The embedded store's order records as read back from its file: any bytes decode or are refused,
//! never a panic.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    afallon_store::fuzzing::order_record(bytes);
});
