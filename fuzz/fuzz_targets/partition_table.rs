//! The guest's root drive as the agent reads it to find `root=PARTUUID=`: an MBR and a
//! GPT made of any bytes.
#![no_main]

use ec1_agent::init::partuuid;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = partuuid::mbr_partitions(data);
    let mut read = |offset: u64, len: usize| -> Vec<u8> {
        let start = (offset as usize).min(data.len());
        let end = start.saturating_add(len).min(data.len());
        data[start..end].to_vec()
    };
    let sectors = Some((data.len() / 512) as u64);
    let _ = partuuid::partitions(&mut read, 0, sectors);
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = partuuid::parse_spec(text);
    }
});
