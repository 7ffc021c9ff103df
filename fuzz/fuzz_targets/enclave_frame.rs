//! Fuzzes the enclave's pipe frames, both ways: the enclave process reads the host's calls and
//! the host reads the enclave's answers, and neither trusts the other's bytes.
#![no_main]

use afallon_enclave::pipe;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut stream = data;
    while let Ok(Some(frame)) = pipe::read_frame(&mut stream) {
        let _ = pipe::decode_call(&frame);
        let _ = pipe::decode_answer(&frame);
    }
    let _ = pipe::decode_call(data);
    let _ = pipe::decode_answer(data);
});
