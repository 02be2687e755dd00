//! What an agent (or a host) may send on the channel: any bytes, through the frame
//! reader (resynchronisation included) and the message decoder.
#![no_main]

use ec1_proto::{Frame, FrameReader, ReadEvent};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut r = FrameReader::new(std::io::Cursor::new(data));
    for _ in 0..10_000 {
        match r.next_event() {
            Ok(ReadEvent::Frame(raw)) => {
                let _ = Frame::parse(raw);
            }
            Ok(ReadEvent::Lost(_)) => {}
            Ok(ReadEvent::Eof) | Err(_) => break,
        }
    }
    let _ = ec1_proto::Msg::decode(data);
});
