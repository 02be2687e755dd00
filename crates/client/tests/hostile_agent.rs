//! A hostile agent: something in the guest that speaks the protocol but answers a
//! session with an end that does not fit it. The host client must report an error for
//! that session, never panic, and carry on.

use ec1_client::{Client, Command};
use ec1_proto::{write_msg, FrameReader, Kind, Msg, ReadEvent, ReadyInfo, PROTOCOL_VERSION};
use std::os::unix::net::UnixStream;
use std::time::Duration;

/// A fake agent on `stream`: answers the hello, then ends every exec or upload
/// session with the end of the other kind (every other exec after starting it).
fn misbehave(stream: UnixStream) {
    let mut w = stream.try_clone().unwrap();
    let mut r = FrameReader::new(stream);
    let mut execs = 0;
    while let Ok(ReadEvent::Frame(f)) = r.next_event() {
        if f.header.kind != Kind::Control as u8 {
            continue;
        }
        let Ok(msg) = Msg::decode(&f.payload) else {
            continue;
        };
        let reply = match msg {
            Msg::Hello { nonce, .. } => Msg::Ready(ReadyInfo {
                version: PROTOCOL_VERSION,
                nonce,
                agent_version: "hostile".into(),
                mode: "initramfs".into(),
                agent_start_ns: 1,
                agent_ready_ns: 2,
                uptime_ns: 3,
                realtime_ns: 4,
            }),
            Msg::Exec(_) => {
                execs += 1;
                if execs % 2 == 0 {
                    let started = Msg::Started { pid: 42 };
                    if write_msg(&mut w, f.header.session, &started).is_err() {
                        return;
                    }
                }
                Msg::UploadDone { bytes: 7 }
            }
            Msg::Upload { .. } => Msg::Exited {
                how: ec1_proto::Termination::Code(0),
                timed_out: false,
            },
            _ => continue,
        };
        if write_msg(&mut w, f.header.session, &reply).is_err() {
            return;
        }
    }
}

#[test]
fn an_end_of_the_wrong_kind_is_an_error_not_a_panic() {
    let (host, guest) = UnixStream::pair().unwrap();
    let agent = std::thread::spawn(move || misbehave(guest));
    let client = Client::handshake(host, Duration::from_secs(10)).unwrap();
    // Before it started, and after.
    for _ in 0..2 {
        let err = client
            .output(&Command::new("true"))
            .expect_err("an exec ended by an upload's end");
        assert!(err.to_string().contains("UploadDone"), "{err}");
        assert!(matches!(err, ec1_client::Error::Protocol(_)), "{err:?}");
    }
    let d = tempfile::tempdir().unwrap();
    let local = d.path().join("f");
    std::fs::write(&local, b"x").unwrap();
    // (Ended before its data went: the upload fails on its first write, or at its end.)
    client
        .upload(&local, "/tmp/f")
        .expect_err("an upload ended by an exit");
    // The connection is still served: the next exec gets its (wrong) answer too.
    assert!(client.output(&Command::new("true")).is_err());
    client.close();
    agent.join().unwrap();
}
