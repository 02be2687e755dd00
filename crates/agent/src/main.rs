//! `/init` of ec1's agent initramfs. See the library documentation.

fn main() {
    let start = ec1_agent::sys::boottime_ns();
    if std::process::id() != 1 {
        eprintln!(
            "ec1-agent is the init (PID 1) of an ec1 guest's initramfs and serves the host over \
             the virtio-serial port `ec1.agent`; it is not meant to be started by hand"
        );
        std::process::exit(2);
    }
    ec1_agent::init::boot(start)
}
