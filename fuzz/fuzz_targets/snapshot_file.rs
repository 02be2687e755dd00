//! A snapshot file handed to `snapshot/load` or `--describe-snapshot`: its header and
//! its machine description (JSON).
#![no_main]

use ec1_engine_qemu::snapshot::format::Header;
use ec1_engine_qemu::snapshot::Machine;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = Header::decode(std::path::Path::new("fuzz.snap"), data, data.len() as u64);
    let _ = serde_json::from_slice::<Machine>(data);
});
