//! `ec1 cp`: copy files into and out of a running VM, permissions kept.

use crate::args::CpArgs;
use std::path::Path;

/// One side of a copy.
#[derive(Debug, PartialEq, Eq)]
enum Place<'a> {
    Host(&'a Path),
    Guest(&'a str),
}

fn place(s: &str) -> Place<'_> {
    match s.strip_prefix("vm:") {
        Some(p) => Place::Guest(p),
        None => Place::Host(Path::new(s)),
    }
}

pub fn run(args: &CpArgs) -> i32 {
    match run_inner(args) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("ec1 cp: {e}");
            1
        }
    }
}

fn run_inner(args: &CpArgs) -> Result<(), String> {
    match (place(&args.src), place(&args.dst)) {
        (Place::Host(src), Place::Guest(dst)) => {
            let conn = crate::exec_cmd::connect(&args.api_sock)?;
            conn.client
                .upload(src, dst)
                .map(|_| ())
                .map_err(|e| e.to_string())
        }
        (Place::Guest(src), Place::Host(dst)) => {
            let conn = crate::exec_cmd::connect(&args.api_sock)?;
            conn.client
                .download(src, dst)
                .map(|_| ())
                .map_err(|e| e.to_string())
        }
        _ => Err("exactly one of SRC and DST must be in the guest (vm:PATH)".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_are_parsed() {
        assert_eq!(place("vm:/etc/x"), Place::Guest("/etc/x"));
        assert_eq!(place("./x"), Place::Host(Path::new("./x")));
    }

    #[test]
    fn both_sides_on_one_machine_is_an_error() {
        let a = CpArgs {
            api_sock: "/nonexistent".into(),
            src: "a".into(),
            dst: "b".into(),
        };
        assert_eq!(run(&a), 1);
        let a = CpArgs {
            api_sock: "/nonexistent".into(),
            src: "vm:/a".into(),
            dst: "vm:/b".into(),
        };
        assert!(run_inner(&a).unwrap_err().contains("exactly one"));
        let a = CpArgs {
            api_sock: "/nonexistent/fc.sock".into(),
            src: "vm:/a".into(),
            dst: "/tmp/b".into(),
        };
        assert!(run_inner(&a).unwrap_err().contains("--inject-agent"));
    }
}
