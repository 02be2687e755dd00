//! Every path and method of Firecracker's spec, over a real Unix socket against a fake
//! engine: one success case and the failure cases (wrong state, bad body, unknown
//! field, out of range), asserting status and `fault_message`.

mod common;

use std::time::Duration;

use common::*;
use ec1_api::config_file::VmConfigFile;
use ec1_engine::{EngineEvent, SerialOut};
use serde_json::json;

const DESER: &str = "An error occurred when deserializing the json body of a request: ";

#[test]
fn get_root_describes_the_instance() {
    let t = TestVmm::new();
    let mut c = t.client();
    let r = c.get("/");
    assert_eq!(r.status, 200);
    assert_eq!(
        r.body.unwrap(),
        json!({"id":"test-vm","state":"Not started","vmm_version":"1.17.0","app_name":"Firecracker"})
    );
    assert_eq!(
        c.bad("GET", "/", Some("{}")),
        "GET request cannot have a body."
    );
    let mut c = t.boot();
    assert_eq!(c.get("/").body.unwrap()["state"], "Running");
}

#[test]
fn get_version() {
    let t = TestVmm::new();
    let mut c = t.client();
    let r = c.get("/version");
    assert_eq!(r.status, 200);
    assert_eq!(r.body.unwrap(), json!({"firecracker_version": "1.17.0"}));
    assert_eq!(
        c.bad("GET", "/version", Some("x")),
        "GET request cannot have a body."
    );
}

#[test]
fn unknown_paths_and_methods() {
    let t = TestVmm::new();
    let mut c = t.client();
    assert_eq!(
        c.bad("GET", "/nope", None),
        "Invalid request method and/or path: GET nope."
    );
    assert_eq!(
        c.bad("POST", "/actions", Some("{}")),
        "Invalid request method and/or path: POST actions."
    );
    assert_eq!(
        c.bad("PUT", "/nope", Some("{}")),
        "Invalid request method and/or path: PUT nope."
    );
    assert_eq!(c.bad("PUT", "/boot-source", None), "Empty PUT request.");
    assert_eq!(c.bad("PATCH", "/vm", None), "Empty PATCH request.");
    // The connection survives every error.
    assert_eq!(c.get("/").status, 200);
}

#[test]
fn put_actions_instance_start() {
    let t = TestVmm::new();
    let mut c = t.client();
    assert_eq!(
        c.bad(
            "PUT",
            "/actions",
            Some(r#"{"action_type":"InstanceStart"}"#)
        ),
        "Start microvm error: Cannot start microvm without kernel configuration."
    );
    assert!(c
        .bad("PUT", "/actions", Some(r#"{"action_type":"Reboot"}"#))
        .starts_with(DESER));
    assert!(c
        .bad(
            "PUT",
            "/actions",
            Some(r#"{"action_type":"InstanceStart","x":1}"#)
        )
        .contains("unknown field `x`"));
    assert!(c.bad("PUT", "/actions", Some("{")).starts_with(DESER));
    for pre in ["FlushMetrics", "SendCtrlAltDel"] {
        assert_eq!(
            c.bad(
                "PUT",
                "/actions",
                Some(&format!(r#"{{"action_type":"{pre}"}}"#))
            ),
            PRE_BOOT
        );
    }
    let mut c = t.boot();
    assert_eq!(t.engine.calls(), ["start"]);
    let spec = t.engine.spec().unwrap();
    assert_eq!(spec.cmdline, "console=ttyS0 pci=off");
    assert_eq!((spec.vcpus, spec.mem_mib), (1, 128));
    assert_eq!(spec.serial, SerialOut::Stdio);
    assert_eq!(
        c.bad(
            "PUT",
            "/actions",
            Some(r#"{"action_type":"InstanceStart"}"#)
        ),
        POST_BOOT
    );
}

#[test]
fn instance_start_reports_the_engines_error() {
    let t = TestVmm::with(
        FakeBehaviour {
            fail_start: Some("qemu said no".into()),
            ..Default::default()
        },
        51200,
    );
    let mut c = t.client();
    let k = t.file("vmlinux");
    c.ok(
        "PUT",
        "/boot-source",
        &format!(r#"{{"kernel_image_path":"{k}"}}"#),
    );
    assert_eq!(
        c.bad(
            "PUT",
            "/actions",
            Some(r#"{"action_type":"InstanceStart"}"#)
        ),
        "Start microvm error: invalid machine configuration: qemu said no"
    );
    assert_eq!(t.engine.calls(), ["start", "stop"]);
    assert_eq!(c.get("/").body.unwrap()["state"], "Not started");
}

#[test]
fn put_actions_post_boot() {
    let t = TestVmm::with(
        FakeBehaviour {
            ctrl_alt_del: true,
            ..Default::default()
        },
        51200,
    );
    let metrics = t.file("metrics.json");
    let mut c = t.client();
    c.ok(
        "PUT",
        "/metrics",
        &format!(r#"{{"metrics_path":"{metrics}"}}"#),
    );
    let mut c2 = t.boot();
    c.ok("PUT", "/actions", r#"{"action_type":"SendCtrlAltDel"}"#);
    assert!(t.engine.calls().contains(&"ctrl_alt_del".to_string()));
    c2.ok("PUT", "/actions", r#"{"action_type":"FlushMetrics"}"#);
    let text = std::fs::read_to_string(&metrics).unwrap();
    let line: serde_json::Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    // The metrics PUT, boot-source PUT and the two actions so far.
    assert_eq!(line["put_api_requests"]["metrics_count"], 1);
    assert_eq!(line["put_api_requests"]["boot_source_count"], 1);
    assert!(line["put_api_requests"]["actions_count"].as_u64().unwrap() >= 2);
}

#[test]
fn ctrl_alt_del_on_an_engine_without_it() {
    let t = TestVmm::new();
    let mut c = t.boot();
    assert_eq!(
        c.bad("PUT", "/actions", Some(r#"{"action_type":"SendCtrlAltDel"}"#)),
        "The requested operation is not supported: Ctrl-Alt-Del is not supported by the fake engine"
    );
}

#[test]
fn put_boot_source() {
    let t = TestVmm::new();
    let mut c = t.client();
    let k = t.file("vmlinux");
    let i = t.file("initrd");
    c.ok(
        "PUT",
        "/boot-source",
        &format!(r#"{{"kernel_image_path":"{k}","initrd_path":"{i}","boot_args":"console=ttyS0 reboot=k"}}"#),
    );
    let e = c.bad(
        "PUT",
        "/boot-source",
        Some(r#"{"kernel_image_path":"/nonexistent/k"}"#),
    );
    assert!(
        e.starts_with("Boot source error: The kernel file cannot be opened: No such file"),
        "{e}"
    );
    let e = c.bad(
        "PUT",
        "/boot-source",
        Some(&format!(
            r#"{{"kernel_image_path":"{k}","initrd_path":"/nonexistent/i"}}"#
        )),
    );
    assert!(
        e.starts_with("Boot source error: The initrd file cannot be opened"),
        "{e}"
    );
    let e = c.bad(
        "PUT",
        "/boot-source",
        Some(&format!(
            r#"{{"kernel_image_path":"{k}","boot_args":"{}"}}"#,
            "a".repeat(3000)
        )),
    );
    assert!(
        e.starts_with("Boot source error: The kernel command line is invalid"),
        "{e}"
    );
    assert!(c
        .bad(
            "PUT",
            "/boot-source",
            Some(r#"{"kernel_image_path":"k","bogus":1}"#)
        )
        .contains("unknown field `bogus`"));
    assert!(c
        .bad("PUT", "/boot-source", Some(r#"{"initrd_path":"i"}"#))
        .contains("missing field `kernel_image_path`"));
    c.ok("PUT", "/actions", r#"{"action_type":"InstanceStart"}"#);
    let spec = t.engine.spec().unwrap();
    assert_eq!(spec.kernel.to_str().unwrap(), k);
    assert_eq!(spec.initrd.unwrap().to_str().unwrap(), i);
    assert_eq!(spec.cmdline, "console=ttyS0 reboot=k pci=off");
    assert_eq!(
        c.bad(
            "PUT",
            "/boot-source",
            Some(&format!(r#"{{"kernel_image_path":"{k}"}}"#))
        ),
        POST_BOOT
    );
}

#[test]
fn put_cpu_config() {
    let t = TestVmm::new();
    let mut c = t.client();
    c.ok("PUT", "/cpu-config", "{}");
    assert_eq!(
        c.bad(
            "PUT",
            "/cpu-config",
            Some(r#"{"cpuid_modifiers":[{"leaf":"0x1","subleaf":"0x0","flags":0,"modifiers":[{"register":"eax","bitmap":"0bxxxxxxxxxxxxxxxxxxxxxxxxxxxx0001"}]}]}"#)
        ),
        unsupported("custom CPU templates are")
    );
    assert!(c
        .bad(
            "PUT",
            "/cpu-config",
            Some(r#"{"msr_modifiers":[{"addr":"0x10a","bitmap":"0b1"}]}"#)
        )
        .starts_with("Configure CPU error: MSR bitmap"));
    assert!(c
        .bad("PUT", "/cpu-config", Some(r#"{"cpuid":[]}"#))
        .contains("unknown field `cpuid`"));
    t.boot();
    assert_eq!(c.bad("PUT", "/cpu-config", Some("{}")), POST_BOOT);
}

fn drive_body(id: &str, path: &str, root: bool) -> String {
    format!(
        r#"{{"drive_id":"{id}","path_on_host":"{path}","is_root_device":{root},"is_read_only":false}}"#
    )
}

#[test]
fn put_drives() {
    let t = TestVmm::new();
    let mut c = t.client();
    let img = t.file("rootfs.ext4");
    let data = t.file("data.img");
    c.ok("PUT", "/drives/data", &drive_body("data", &data, false));
    c.ok(
        "PUT",
        "/drives/rootfs",
        &format!(r#"{{"drive_id":"rootfs","path_on_host":"{img}","is_root_device":true,"is_read_only":true,"cache_type":"Writeback","io_engine":"Async","rate_limiter":{{"bandwidth":{{"size":1000,"refill_time":100}}}}}}"#),
    );
    assert_eq!(
        c.bad(
            "PUT",
            "/drives/other",
            Some(&drive_body("other", &data, true))
        ),
        "Drive config error: A root block device already exists!"
    );
    assert_eq!(
        c.bad("PUT", "/drives/a-b", Some(&drive_body("a-b", &data, false))),
        "API Resource IDs can only contain alphanumeric characters and underscores."
    );
    assert_eq!(
        c.bad("PUT", "/drives/x", Some(&drive_body("y", &data, false))),
        "The id from the path does not match the id from the body!"
    );
    let e = c.bad(
        "PUT",
        "/drives/x",
        Some(&drive_body("x", "/nonexistent/img", false)),
    );
    assert!(
        e.starts_with("Drive config error: Unable to create the virtio block device"),
        "{e}"
    );
    assert_eq!(
        c.bad(
            "PUT",
            "/drives/vu",
            Some(r#"{"drive_id":"vu","is_root_device":false,"socket":"/nonexistent/vhost.sock"}"#)
        ),
        "Drive config error: Unable to create the block device: Vhost user backend error: Vhost-user error: no vhost-user-blk backend listens on /nonexistent/vhost.sock"
    );
    // A vhost-user drive takes its backend's socket in place of an image.
    let vu = t.dir.path().join("vu.sock");
    let _backend = std::os::unix::net::UnixListener::bind(&vu).unwrap();
    c.ok(
        "PUT",
        "/drives/vu",
        &format!(
            r#"{{"drive_id":"vu","is_root_device":false,"socket":"{}"}}"#,
            vu.display()
        ),
    );
    assert!(c
        .bad(
            "PUT",
            "/drives/x",
            Some(r#"{"drive_id":"x","is_root_device":false,"cache_type":"Fast"}"#)
        )
        .starts_with(DESER));
    assert!(c
        .bad("PUT", "/drives/x", Some(r#"{"drive_id":"x"}"#))
        .contains("missing field `is_root_device`"));
    let k = t.file("vmlinux");
    c.ok(
        "PUT",
        "/boot-source",
        &format!(r#"{{"kernel_image_path":"{k}"}}"#),
    );
    c.ok("PUT", "/actions", r#"{"action_type":"InstanceStart"}"#);
    let spec = t.engine.spec().unwrap();
    let ids: Vec<_> = spec.drives.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(ids, ["rootfs", "data", "vu"]);
    assert!(spec.drives[2].vhost_user && spec.drives[2].path == vu);
    assert!(!spec.drives[0].vhost_user);
    assert!(spec.drives[0].read_only);
    assert_eq!(spec.drives[0].cache, ec1_engine::CacheType::Writeback);
    assert_eq!(
        spec.drives[0].rate_limit.unwrap().bandwidth.unwrap().size,
        1000
    );
    assert!(
        spec.cmdline.as_str().ends_with(" root=/dev/vda ro pci=off"),
        "{}",
        spec.cmdline
    );
    assert_eq!(
        c.bad(
            "PUT",
            "/drives/data",
            Some(&drive_body("data", &data, false))
        ),
        POST_BOOT
    );
}

#[test]
fn patch_drives() {
    let t = TestVmm::with(
        FakeBehaviour {
            drive_updates: true,
            ..Default::default()
        },
        51200,
    );
    let mut c = t.client();
    let img = t.file("data.img");
    let img2 = t.file("data2.img");
    c.ok("PUT", "/drives/data", &drive_body("data", &img, false));
    let patch = format!(r#"{{"drive_id":"data","path_on_host":"{img2}"}}"#);
    assert_eq!(c.bad("PATCH", "/drives/data", Some(&patch)), PRE_BOOT);
    t.boot();
    c.ok("PATCH", "/drives/data", &patch);
    c.ok(
        "PATCH",
        "/drives/data",
        r#"{"drive_id":"data","rate_limiter":{"ops":{"size":10,"refill_time":1000}}}"#,
    );
    let calls = t.engine.calls();
    assert!(
        calls
            .iter()
            .any(|c| c.starts_with("update_drive data path=Some(") && c.contains("data2.img")),
        "{calls:?}"
    );
    assert!(
        calls
            .iter()
            .any(|c| c == "update_drive data path=None rate_limit=true"),
        "{calls:?}"
    );
    // The new path shows in the exported configuration.
    let cfg = c.get("/vm/config").body.unwrap();
    assert_eq!(cfg["drives"][0]["path_on_host"], img2.as_str());
    let e = c.bad(
        "PATCH",
        "/drives/nope",
        Some(r#"{"drive_id":"nope","path_on_host":"/x"}"#),
    );
    assert!(
        e.starts_with(
            "Drive config error: Unable to patch the block device: no drive with id `nope`"
        ),
        "{e}"
    );
    let e = c.bad(
        "PATCH",
        "/drives/data",
        Some(r#"{"drive_id":"data","path_on_host":"/nonexistent"}"#),
    );
    assert!(e.contains("cannot open /nonexistent"), "{e}");
    assert!(c
        .bad(
            "PATCH",
            "/drives/data",
            Some(r#"{"drive_id":"data","is_read_only":true}"#)
        )
        .contains("unknown field `is_read_only`"));
    assert_eq!(
        c.bad("PATCH", "/drives/x", Some(r#"{"drive_id":"y"}"#)),
        "The id from the path does not match the id from the body!"
    );
}

#[test]
fn patch_drives_on_an_engine_without_updates() {
    let t = TestVmm::new();
    let mut c = t.client();
    let img = t.file("data.img");
    c.ok("PUT", "/drives/data", &drive_body("data", &img, false));
    t.boot();
    assert_eq!(
        c.bad("PATCH", "/drives/data", Some(&format!(r#"{{"drive_id":"data","path_on_host":"{img}"}}"#))),
        "The requested operation is not supported: drive updates on a running guest is not supported by the fake engine"
    );
}

#[test]
fn delete_drives_is_post_boot_hot_unplug() {
    let t = TestVmm::new();
    let mut c = t.client();
    assert_eq!(c.bad("DELETE", "/drives/data", None), PRE_BOOT);
    t.boot();
    assert_eq!(
        c.bad("DELETE", "/drives/data", None),
        unsupported("hot-unplugging devices is")
    );
    assert_eq!(
        c.bad("DELETE", "/network-interfaces/eth0", None),
        unsupported("hot-unplugging devices is")
    );
    assert_eq!(
        c.bad("DELETE", "/pmem/p0", None),
        unsupported("hot-unplugging devices is")
    );
}

#[test]
fn put_and_patch_pmem() {
    let t = TestVmm::new();
    let mut c = t.client();
    let p = t.file("pmem.img");
    let body =
        format!(r#"{{"id":"p0","path_on_host":"{p}","root_device":false,"read_only":true}}"#);
    assert_eq!(
        c.bad("PUT", "/pmem/p0", Some(&body)),
        unsupported("virtio-pmem devices are")
    );
    assert_eq!(
        c.bad("PUT", "/pmem/p1", Some(&body)),
        "The id from the path does not match the id from the body!"
    );
    assert!(c
        .bad("PUT", "/pmem/p0", Some(r#"{"id":"p0"}"#))
        .contains("missing field `path_on_host`"));
    assert_eq!(c.bad("PATCH", "/pmem/p0", Some(r#"{"id":"p0"}"#)), PRE_BOOT);
    t.boot();
    assert_eq!(c.bad("PUT", "/pmem/p0", Some(&body)), POST_BOOT);
    assert_eq!(
        c.bad(
            "PATCH",
            "/pmem/p0",
            Some(r#"{"id":"p0","rate_limiter":{}}"#)
        ),
        unsupported("virtio-pmem devices are")
    );
    assert!(c
        .bad("PATCH", "/pmem/p0", Some(r#"{"id":"p0","x":1}"#))
        .contains("unknown field"));
}

#[test]
fn put_logger() {
    let t = TestVmm::new();
    let mut c = t.client();
    let log = t.file("fc.log");
    c.ok(
        "PUT",
        "/logger",
        &format!(
            r#"{{"log_path":"{log}","level":"warning","show_level":true,"show_log_origin":false}}"#
        ),
    );
    let e = c.bad(
        "PUT",
        "/logger",
        Some(r#"{"log_path":"/nonexistent/fc.log"}"#),
    );
    assert!(
        e.starts_with("Logger error: Failed to open target file: No such file"),
        "{e}"
    );
    assert!(c
        .bad("PUT", "/logger", Some(r#"{"level":"loud"}"#))
        .contains("invalid log level"));
    assert!(c
        .bad("PUT", "/logger", Some(r#"{"colour":true}"#))
        .contains("unknown field"));
    t.vmm
        .logger()
        .log_at(log::Level::Warn, "ec1_api::test", format_args!("written"));
    t.vmm
        .logger()
        .log_at(log::Level::Info, "ec1_api::test", format_args!("filtered"));
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("[test-vm:"), "{text}");
    assert!(text.contains(":WARN] written\n"), "{text}");
    assert!(!text.contains("filtered"), "{text}");
    t.boot();
    assert_eq!(c.bad("PUT", "/logger", Some("{}")), POST_BOOT);
}

#[test]
fn get_machine_config() {
    let t = TestVmm::new();
    let mut c = t.client();
    let r = c.get("/machine-config");
    assert_eq!(r.status, 200);
    assert_eq!(
        r.body.unwrap(),
        json!({"vcpu_count":1,"mem_size_mib":128,"smt":false,"track_dirty_pages":false,"huge_pages":"None"})
    );
    t.boot();
    assert_eq!(c.get("/machine-config").status, 200);
}

#[test]
fn put_machine_config() {
    let t = TestVmm::new();
    let mut c = t.client();
    c.ok(
        "PUT",
        "/machine-config",
        r#"{"vcpu_count":2,"mem_size_mib":256,"smt":true,"track_dirty_pages":true}"#,
    );
    assert_eq!(
        c.get("/machine-config").body.unwrap(),
        json!({"vcpu_count":2,"mem_size_mib":256,"smt":true,"track_dirty_pages":true,"huge_pages":"None"})
    );
    let vcpu = "Machine config error: The number of vCPUs must be greater than 0, less than 32 and must be 1 or an even number if SMT is enabled.";
    assert_eq!(
        c.bad(
            "PUT",
            "/machine-config",
            Some(r#"{"vcpu_count":0,"mem_size_mib":128}"#)
        ),
        vcpu
    );
    assert_eq!(
        c.bad(
            "PUT",
            "/machine-config",
            Some(r#"{"vcpu_count":33,"mem_size_mib":128}"#)
        ),
        vcpu
    );
    assert_eq!(
        c.bad(
            "PUT",
            "/machine-config",
            Some(r#"{"vcpu_count":3,"mem_size_mib":128,"smt":true}"#)
        ),
        vcpu
    );
    assert_eq!(
        c.bad("PUT", "/machine-config", Some(r#"{"vcpu_count":1,"mem_size_mib":0}"#)),
        "Machine config error: The memory size (MiB) is either 0, or not a multiple of the configured page size."
    );
    assert!(c
        .bad(
            "PUT",
            "/machine-config",
            Some(r#"{"vcpu_count":300,"mem_size_mib":128}"#)
        )
        .starts_with(DESER));
    assert!(c
        .bad("PUT", "/machine-config", Some(r#"{"vcpu_count":1}"#))
        .contains("missing field `mem_size_mib`"));
    assert!(c
        .bad(
            "PUT",
            "/machine-config",
            Some(r#"{"vcpu_count":1,"mem_size_mib":128,"gpu":true}"#)
        )
        .contains("unknown field `gpu`"));
    assert_eq!(
        c.bad(
            "PUT",
            "/machine-config",
            Some(r#"{"vcpu_count":1,"mem_size_mib":128,"huge_pages":"Transparent"}"#)
        ),
        unsupported("transparent huge pages are")
    );
    assert_eq!(
        c.bad(
            "PUT",
            "/machine-config",
            Some(r#"{"vcpu_count":1,"mem_size_mib":128,"cpu_template":"T2"}"#)
        ),
        unsupported("static CPU templates are")
    );
    // A failed update changes nothing.
    assert_eq!(c.get("/machine-config").body.unwrap()["vcpu_count"], 2);
    let mut c2 = t.boot();
    let spec = t.engine.spec().unwrap();
    assert_eq!((spec.vcpus, spec.smt, spec.mem_mib), (2, true, 256));
    assert_eq!(
        c2.bad(
            "PUT",
            "/machine-config",
            Some(r#"{"vcpu_count":1,"mem_size_mib":128}"#)
        ),
        POST_BOOT
    );
}

#[test]
fn patch_machine_config() {
    let t = TestVmm::new();
    let mut c = t.client();
    c.ok("PATCH", "/machine-config", r#"{"mem_size_mib":512}"#);
    c.ok(
        "PATCH",
        "/machine-config",
        r#"{"vcpu_count":4,"cpu_template":"None"}"#,
    );
    let m = c.get("/machine-config").body.unwrap();
    assert_eq!(
        (m["vcpu_count"].as_u64(), m["mem_size_mib"].as_u64()),
        (Some(4), Some(512))
    );
    assert_eq!(
        c.bad("PATCH", "/machine-config", Some("{}")),
        "Empty PATCH request."
    );
    assert!(c
        .bad("PATCH", "/machine-config", Some(r#"{"vcpu_count":64}"#))
        .starts_with("Machine config error: The number of vCPUs"));
    assert!(c
        .bad("PATCH", "/machine-config", Some(r#"{"cores":1}"#))
        .contains("unknown field"));
    t.boot();
    assert_eq!(
        c.bad("PATCH", "/machine-config", Some(r#"{"vcpu_count":1}"#)),
        POST_BOOT
    );
}

#[test]
fn put_metrics() {
    let t = TestVmm::new();
    let mut c = t.client();
    let m = t.file("metrics.fifo");
    assert!(c
        .bad(
            "PUT",
            "/metrics",
            Some(r#"{"metrics_path":"/nonexistent/m"}"#)
        )
        .starts_with("Metrics error: No such file"));
    c.ok(
        "PUT",
        "/metrics",
        &format!(r#"{{"metrics_path":"{m}","emit_id":true,"properties":{{"k":"v"}}}}"#),
    );
    assert_eq!(
        c.bad(
            "PUT",
            "/metrics",
            Some(&format!(r#"{{"metrics_path":"{m}"}}"#))
        ),
        "Metrics error: Reinitialization of metrics not allowed."
    );
    assert!(c
        .bad("PUT", "/metrics", Some("{}"))
        .contains("missing field `metrics_path`"));
    t.boot();
    assert_eq!(
        c.bad(
            "PUT",
            "/metrics",
            Some(&format!(r#"{{"metrics_path":"{m}"}}"#))
        ),
        POST_BOOT
    );
    c.ok("PUT", "/actions", r#"{"action_type":"FlushMetrics"}"#);
    let line: serde_json::Value =
        serde_json::from_str(std::fs::read_to_string(&m).unwrap().lines().last().unwrap()).unwrap();
    assert_eq!(line["id"], "test-vm");
    assert_eq!(line["properties"]["k"], "v");
    assert!(line["put_api_requests"]["metrics_fails"].as_u64().unwrap() >= 2);
}

#[test]
fn mmds_data_store() {
    let t = TestVmm::new();
    let mut c = t.client();
    let r = c.get("/mmds");
    assert_eq!((r.status, r.body.unwrap()), (200, json!({})));
    assert_eq!(
        c.bad("PATCH", "/mmds", Some(r#"{"a":1}"#)),
        "MMDS error: The MMDS data store is not initialized."
    );
    c.ok(
        "PUT",
        "/mmds",
        r#"{"latest":{"meta-data":{"ami-id":"ami-1","x":1}}}"#,
    );
    c.ok(
        "PATCH",
        "/mmds",
        r#"{"latest":{"meta-data":{"x":null,"y":2}}}"#,
    );
    assert_eq!(
        c.get("/mmds").body.unwrap(),
        json!({"latest":{"meta-data":{"ami-id":"ami-1","y":2}}})
    );
    assert_eq!(
        c.bad("PUT", "/mmds", Some("[1,2]")),
        "MMDS error: The MMDS data store must be a JSON object."
    );
    assert!(c.bad("PUT", "/mmds", Some("{")).starts_with(DESER));
    let big = format!(r#"{{"k":"{}"}}"#, "x".repeat(2000));
    let r = c.request("PUT", "/mmds", Some(&big));
    assert_eq!(r.status, 413);
    assert_eq!(
        r.fault(),
        "MMDS limit exceeded error: The MMDS patch request doesn't fit."
    );
    // The MMDS store is usable after boot too.
    t.boot();
    c.ok("PUT", "/mmds", r#"{"after":"boot"}"#);
    c.ok("PATCH", "/mmds", r#"{"more":true}"#);
    assert_eq!(
        c.get("/mmds").body.unwrap(),
        json!({"after":"boot","more":true})
    );
}

#[test]
fn put_mmds_config() {
    let t = TestVmm::new();
    let mut c = t.client();
    assert_eq!(
        c.bad(
            "PUT",
            "/mmds/config",
            Some(
                r#"{"network_interfaces":["eth0"],"version":"V2","ipv4_address":"169.254.170.2"}"#
            )
        ),
        "MMDS config error: The list of network interface IDs provided contains at least one ID that does not correspond to any existing network interface: eth0."
    );
    assert_eq!(
        c.bad("PUT", "/mmds/config", Some(r#"{"network_interfaces":[]}"#)),
        "MMDS config error: The list of network interface IDs that allow forwarding MMDS requests is empty."
    );
    assert!(c
        .bad(
            "PUT",
            "/mmds/config",
            Some(r#"{"network_interfaces":["eth0"],"ipv4_address":"10.0.0.1"}"#)
        )
        .contains("not link local"));
    assert!(c
        .bad(
            "PUT",
            "/mmds/config",
            Some(r#"{"network_interfaces":["eth0"],"version":"V3"}"#)
        )
        .starts_with(DESER));
    t.boot();
    assert_eq!(
        c.bad(
            "PUT",
            "/mmds/config",
            Some(r#"{"network_interfaces":["eth0"]}"#)
        ),
        POST_BOOT
    );
}

#[test]
fn put_entropy() {
    let t = TestVmm::new();
    let mut c = t.client();
    c.ok(
        "PUT",
        "/entropy",
        r#"{"rate_limiter":{"bandwidth":{"size":1000,"refill_time":100}}}"#,
    );
    assert_eq!(
        c.bad(
            "PUT",
            "/entropy",
            Some(r#"{"rate_limiter":{"ops":{"size":1,"refill_time":1}}}"#)
        ),
        unsupported(
            "operations (ops) rate limits on the entropy device are (the fake limits bytes only)"
        )
    );
    assert!(c
        .bad("PUT", "/entropy", Some(r#"{"rate":1}"#))
        .contains("unknown field"));
    assert_eq!(
        c.get("/vm/config").body.unwrap()["entropy"],
        json!({"rate_limiter":{"bandwidth":{"size":1000,"refill_time":100}}})
    );
    t.boot();
    let e = t.engine.spec().unwrap().devices.entropy.unwrap();
    assert_eq!(e.rate_limit.unwrap().bandwidth.unwrap().size, 1000);
    assert_eq!(c.bad("PUT", "/entropy", Some("{}")), POST_BOOT);
}

/// The engine's serial console after `PUT /serial` with `body` and a boot.
fn serial_after(body: &str) -> SerialOut {
    let t = TestVmm::new();
    let mut c = t.client();
    c.ok("PUT", "/serial", body);
    t.boot();
    assert_eq!(c.bad("PUT", "/serial", Some("{}")), POST_BOOT);
    t.engine.spec().unwrap().serial
}

#[test]
fn put_serial() {
    let t = TestVmm::new();
    let out = t.dir.path().join("serial.out");
    assert!(t
        .client()
        .bad("PUT", "/serial", Some(r#"{"path":"x"}"#))
        .contains("unknown field"));
    assert_eq!(
        serial_after(&format!(r#"{{"serial_out_path":"{}"}}"#, out.display())),
        SerialOut::File(out.clone())
    );
    // The rate limiter (a token bucket of bytes) goes to the engine with the path.
    let limited = serial_after(&format!(
        r#"{{"serial_out_path":"{}","rate_limiter":{{"size":100,"one_time_burst":5,"refill_time":10}}}}"#,
        out.display()
    ));
    match limited {
        SerialOut::Limited { to, bucket, .. } => {
            assert_eq!(to, Some(out));
            assert_eq!(
                (bucket.size, bucket.one_time_burst, bucket.refill_time_ms),
                (100, 5, 10)
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn memory_hotplug() {
    let t = TestVmm::new();
    let mut c = t.client();
    assert_eq!(
        c.bad("PUT", "/hotplug/memory", Some(r#"{"total_size_mib":1024}"#)),
        unsupported("memory hotplug (virtio-mem) is")
    );
    assert_eq!(
        c.bad(
            "PUT",
            "/hotplug/memory",
            Some(r#"{"total_size_mib":1024,"block_size_mib":3}"#)
        ),
        "Memory hotplug config error: Block size must be a power of 2"
    );
    assert!(c
        .bad("PUT", "/hotplug/memory", Some(r#"{"size":1}"#))
        .contains("unknown field"));
    assert_eq!(
        c.bad(
            "PATCH",
            "/hotplug/memory",
            Some(r#"{"requested_size_mib":128}"#)
        ),
        PRE_BOOT
    );
    assert_eq!(c.bad("GET", "/hotplug/memory", None), PRE_BOOT);
    t.boot();
    assert_eq!(
        c.bad("PUT", "/hotplug/memory", Some(r#"{"total_size_mib":1024}"#)),
        POST_BOOT
    );
    assert_eq!(
        c.bad(
            "PATCH",
            "/hotplug/memory",
            Some(r#"{"requested_size_mib":128}"#)
        ),
        unsupported("memory hotplug (virtio-mem) is")
    );
    assert!(c
        .bad(
            "PATCH",
            "/hotplug/memory",
            Some(r#"{"requested_size_mib":-1}"#)
        )
        .starts_with(DESER));
    assert_eq!(
        c.bad("GET", "/hotplug/memory", None),
        unsupported("memory hotplug (virtio-mem) is")
    );
}

#[test]
fn network_interfaces() {
    let t = TestVmm::new();
    let mut c = t.client();
    let ok = r#"{"iface_id":"eth0","host_dev_name":"ec1nosuch0","guest_mac":"06:00:AC:10:00:02","mtu":1500}"#;
    assert!(c
        .bad("PUT", "/network-interfaces/eth0", Some(ok))
        .starts_with(
            "Network config error: Cannot open TAP device ec1nosuch0: no network interface"
        ));
    let e = c.bad(
        "PUT",
        "/network-interfaces/eth0",
        Some(r#"{"iface_id":"eth0","host_dev_name":"tap0","guest_mac":"06:00"}"#),
    );
    assert!(
        e.starts_with(DESER) && e.contains("invalid MAC address"),
        "{e}"
    );
    assert!(c
        .bad(
            "PUT",
            "/network-interfaces/eth0",
            Some(r#"{"iface_id":"eth0","host_dev_name":"tap0","mtu":20}"#)
        )
        .starts_with("Network config error: Invalid MTU 20"));
    assert_eq!(
        c.bad("PUT", "/network-interfaces/eth1", Some(ok)),
        "The id from the path does not match the id from the body!"
    );
    assert_eq!(
        c.bad("PUT", "/network-interfaces/", Some(ok)),
        "The ID cannot be empty."
    );
    assert_eq!(
        c.bad(
            "PATCH",
            "/network-interfaces/eth0",
            Some(r#"{"iface_id":"eth0"}"#)
        ),
        PRE_BOOT
    );
    assert!(c.get("/vm/config").body.unwrap()["network-interfaces"].is_null());
    t.boot();
    assert_eq!(
        c.bad("PUT", "/network-interfaces/eth0", Some(ok)),
        POST_BOOT
    );
    assert_eq!(
        c.bad(
            "PATCH",
            "/network-interfaces/eth0",
            Some(r#"{"iface_id":"eth0","rx_rate_limiter":{}}"#)
        ),
        "Network config error: Invalid interface ID - not found: eth0"
    );
    assert!(c
        .bad(
            "PATCH",
            "/network-interfaces/eth0",
            Some(r#"{"iface_id":"eth0","mtu":1}"#)
        )
        .contains("unknown field"));
}

#[test]
fn put_vsock() {
    let t = TestVmm::new();
    let mut c = t.client();
    let uds = t.dir.path().join("v.sock");
    c.ok(
        "PUT",
        "/vsock",
        &format!(r#"{{"guest_cid":3,"uds_path":"{}"}}"#, uds.display()),
    );
    assert_eq!(
        c.bad(
            "PUT",
            "/vsock",
            Some(r#"{"guest_cid":2,"uds_path":"/tmp/v.sock"}"#)
        ),
        "Vsock config error: guest_cid 2 is reserved: a guest CID must be 3 or more."
    );
    assert!(c
        .bad(
            "PUT",
            "/vsock",
            Some(r#"{"guest_cid":3,"uds_path":"/nonexistent/d/v.sock"}"#)
        )
        .contains("does not exist"));
    assert!(c
        .bad("PUT", "/vsock", Some(r#"{"guest_cid":3}"#))
        .contains("missing field `uds_path`"));
    assert_eq!(c.get("/vm/config").body.unwrap()["vsock"]["guest_cid"], 3);
    t.boot();
    let v = t.engine.spec().unwrap().devices.vsock.unwrap();
    assert_eq!((v.guest_cid, v.uds_path), (3, uds));
    assert_eq!(
        c.bad("PUT", "/vsock", Some(r#"{"guest_cid":3,"uds_path":"/v"}"#)),
        POST_BOOT
    );
}

#[test]
fn balloon_endpoints() {
    let t = TestVmm::new();
    let mut c = t.client();
    assert_eq!(
        c.bad("GET", "/balloon", None),
        "Balloon config error: No balloon device found."
    );
    assert!(c
        .bad("PUT", "/balloon", Some(r#"{"amount_mib":64}"#))
        .contains("missing field `deflate_on_oom`"));
    assert!(c
        .bad(
            "PUT",
            "/balloon",
            Some(r#"{"amount_mib":4096,"deflate_on_oom":true}"#)
        )
        .starts_with("Balloon config error: Amount of pages requested is too large"));
    assert!(c
        .bad(
            "PUT",
            "/balloon",
            Some(r#"{"amount_mib":1,"deflate_on_oom":true,"free_page_hinting":true}"#)
        )
        .contains("free page hinting"));
    c.ok(
        "PUT",
        "/balloon",
        r#"{"amount_mib":64,"deflate_on_oom":true,"stats_polling_interval_s":1}"#,
    );
    assert_eq!(c.get("/balloon").body.unwrap()["amount_mib"], 64);
    assert_eq!(
        c.bad("PATCH", "/balloon", Some(r#"{"amount_mib":1}"#)),
        PRE_BOOT
    );
    assert_eq!(c.bad("GET", "/balloon/statistics", None), PRE_BOOT);
    assert_eq!(
        c.bad(
            "PATCH",
            "/balloon/statistics",
            Some(r#"{"stats_polling_interval_s":1}"#)
        ),
        PRE_BOOT
    );
    assert_eq!(
        c.bad("PATCH", "/balloon/hinting/start", Some("{}")),
        PRE_BOOT
    );
    assert_eq!(c.bad("GET", "/balloon/hinting/status", None), PRE_BOOT);
    assert_eq!(c.bad("PATCH", "/balloon/hinting/stop", None), PRE_BOOT);
    t.boot();
    let b = t.engine.spec().unwrap().devices.balloon.unwrap();
    assert_eq!((b.amount_mib, b.stats_polling_interval_s), (64, 1));
    assert_eq!(
        c.bad(
            "PUT",
            "/balloon",
            Some(r#"{"amount_mib":1,"deflate_on_oom":true}"#)
        ),
        POST_BOOT
    );
    c.ok("PATCH", "/balloon", r#"{"amount_mib":32}"#);
    assert_eq!(c.get("/balloon").body.unwrap()["amount_mib"], 32);
    assert!(c
        .bad("PATCH", "/balloon", Some(r#"{"amount_mib":4096}"#))
        .contains("too large"));
    assert!(c
        .bad("PATCH", "/balloon", Some(r#"{"amount_mib":"x"}"#))
        .starts_with(DESER));
    assert_eq!(
        c.get("/balloon/statistics").body.unwrap(),
        json!({"target_pages": 16384, "actual_pages": 15360, "target_mib": 64,
               "actual_mib": 60, "free_memory": 1048576})
    );
    c.ok(
        "PATCH",
        "/balloon/statistics",
        r#"{"stats_polling_interval_s":5}"#,
    );
    assert!(c
        .bad(
            "PATCH",
            "/balloon/statistics",
            Some(r#"{"stats_polling_interval_s":0}"#)
        )
        .contains("Cannot enable or disable"));
    assert!(c
        .bad("PATCH", "/balloon/statistics", Some(r#"{"interval":1}"#))
        .contains("unknown field"));
    assert!(c
        .bad("PATCH", "/balloon/hinting/start", None)
        .contains("free page hinting"));
    assert!(c
        .bad("GET", "/balloon/hinting/status", None)
        .contains("free page hinting"));
    let calls = t.engine.calls();
    assert!(calls.contains(&"set_balloon 32".to_string()), "{calls:?}");
    assert!(calls.contains(&"set_balloon_stats_interval 5".to_string()));
}

#[test]
fn patch_vm_pauses_and_resumes() {
    let t = TestVmm::new();
    let mut c = t.client();
    assert_eq!(
        c.bad("PATCH", "/vm", Some(r#"{"state":"Paused"}"#)),
        PRE_BOOT
    );
    t.boot();
    c.ok("PATCH", "/vm", r#"{"state":"Paused"}"#);
    assert_eq!(c.get("/").body.unwrap()["state"], "Paused");
    c.ok("PATCH", "/vm", r#"{"state":"Paused"}"#);
    c.ok("PATCH", "/vm", r#"{"state":"Resumed"}"#);
    assert_eq!(c.get("/").body.unwrap()["state"], "Running");
    assert_eq!(t.engine.calls(), ["start", "pause", "resume"]);
    assert!(c
        .bad("PATCH", "/vm", Some(r#"{"state":"Stopped"}"#))
        .starts_with(DESER));
    assert!(c
        .bad("PATCH", "/vm", Some(r#"{"state":"Paused","x":1}"#))
        .contains("unknown field"));
}

#[test]
fn snapshot_create() {
    let t = TestVmm::with(
        FakeBehaviour {
            snapshots: true,
            ..Default::default()
        },
        51200,
    );
    let mut c = t.client();
    let body =
        r#"{"snapshot_path":"/tmp/s.state","mem_file_path":"/tmp/s.mem","snapshot_type":"Diff"}"#;
    assert_eq!(c.bad("PUT", "/snapshot/create", Some(body)), PRE_BOOT);
    t.boot();
    assert!(c
        .bad("PUT", "/snapshot/create", Some(body))
        .starts_with("Create snapshot error: The microVM must be paused"));
    c.ok("PATCH", "/vm", r#"{"state":"Paused"}"#);
    c.ok("PUT", "/snapshot/create", body);
    assert!(t
        .engine
        .calls()
        .contains(&"snapshot /tmp/s.state /tmp/s.mem diff=true".to_string()));
    assert!(c
        .bad("PUT", "/snapshot/create", Some(r#"{"snapshot_path":"/s"}"#))
        .contains("missing field `mem_file_path`"));
    assert_eq!(
        c.bad("PUT", "/snapshot/other", Some(body)),
        "Invalid request method and/or path: PUT /snapshot/other."
    );
}

#[test]
fn snapshot_create_on_an_engine_without_snapshots() {
    let t = TestVmm::new();
    let mut c = t.boot();
    c.ok("PATCH", "/vm", r#"{"state":"Paused"}"#);
    assert_eq!(
        c.bad(
            "PUT",
            "/snapshot/create",
            Some(r#"{"snapshot_path":"/s","mem_file_path":"/m"}"#)
        ),
        "The requested operation is not supported: snapshots is not supported by the fake engine"
    );
}

#[test]
fn snapshot_load() {
    let t = TestVmm::with(
        FakeBehaviour {
            snapshots: true,
            snapshot_metadata: Some(
                r#"{"version":"V2","network_interfaces":["eth0"],"ipv4_address":"169.254.170.2"}"#
                    .into(),
            ),
            ..Default::default()
        },
        51200,
    );
    let mut c = t.client();
    let body = r#"{"snapshot_path":"/tmp/s.state","mem_backend":{"backend_type":"File","backend_path":"/tmp/s.mem"},"network_overrides":[{"iface_id":"eth0","host_dev_name":"tap9"}]}"#;
    assert_eq!(
        c.bad("PUT", "/snapshot/load", Some(r#"{"snapshot_path":"/s","mem_backend":{"backend_type":"Uffd","backend_path":"/u.sock"}}"#)),
        unsupported("userfaultfd (Uffd) memory backends are")
    );
    assert!(c
        .bad(
            "PUT",
            "/snapshot/load",
            Some(r#"{"snapshot_path":"/s","mem_file_path":"/m","network_overrides":[{"iface_id":"eth0"}]}"#)
        )
        .contains("host_dev_name"));
    c.ok("PUT", "/snapshot/load", body);
    assert_eq!(
        t.engine.calls(),
        ["restore /tmp/s.state /tmp/s.mem resume=false eth0->tap9 mmds@169.254.170.2"]
    );
    // The MMDS configuration came back with the snapshot.
    let cfg = c.get("/vm/config").body.unwrap();
    assert_eq!(cfg["mmds-config"]["version"], "V2", "{cfg}");
    assert_eq!(c.get("/").body.unwrap()["state"], "Paused");
    assert_eq!(c.bad("PUT", "/snapshot/load", Some(body)), POST_BOOT);
    c.ok("PATCH", "/vm", r#"{"state":"Resumed"}"#);
    assert_eq!(c.get("/").body.unwrap()["state"], "Running");
    // Settings that are not ec1's MMDS configuration: refused, nothing restored.
    let t = TestVmm::with(
        FakeBehaviour {
            snapshots: true,
            snapshot_metadata: Some("garbage".into()),
            ..Default::default()
        },
        51200,
    );
    let mut c = t.client();
    assert!(c
        .bad("PUT", "/snapshot/load", Some(body))
        .contains("the snapshot's MMDS settings are not ec1's"));
    assert!(t.engine.calls().is_empty());
}

#[test]
fn snapshot_load_needs_a_fresh_process_and_a_capable_engine() {
    let t = TestVmm::new();
    let mut c = t.client();
    let body = r#"{"snapshot_path":"/s","mem_file_path":"/m","resume_vm":true}"#;
    assert_eq!(
        c.bad("PUT", "/snapshot/load", Some(body)),
        "The requested operation is not supported: snapshot restore is not supported by the fake engine"
    );
    // Logger and metrics do not count as boot-specific; a machine config does.
    let log = t.file("l.log");
    c.ok("PUT", "/logger", &format!(r#"{{"log_path":"{log}"}}"#));
    c.ok(
        "PUT",
        "/machine-config",
        r#"{"vcpu_count":1,"mem_size_mib":128}"#,
    );
    assert_eq!(
        c.bad("PUT", "/snapshot/load", Some(body)),
        "Load snapshot error: Loading a microVM snapshot not allowed after configuring boot-specific resources."
    );
    assert!(c
        .bad("PUT", "/snapshot/load", Some(r#"{"snapshot_path":"/s"}"#))
        .contains("either `mem_backend` or `mem_file_path`"));
}

#[test]
fn get_vm_config_round_trips_through_the_config_file_parser() {
    let t = TestVmm::new();
    let mut c = t.client();
    let k = t.file("vmlinux");
    let img = t.file("rootfs.ext4");
    let log = t.file("fc.log");
    c.ok(
        "PUT",
        "/boot-source",
        &format!(r#"{{"kernel_image_path":"{k}","boot_args":"console=ttyS0"}}"#),
    );
    c.ok(
        "PUT",
        "/machine-config",
        r#"{"vcpu_count":2,"mem_size_mib":256}"#,
    );
    c.ok(
        "PUT",
        "/drives/rootfs",
        &format!(r#"{{"drive_id":"rootfs","path_on_host":"{img}","is_root_device":true,"is_read_only":false,"partuuid":"abcd-01","rate_limiter":{{"ops":{{"size":5,"one_time_burst":1,"refill_time":10}}}}}}"#),
    );
    c.ok(
        "PUT",
        "/logger",
        &format!(r#"{{"log_path":"{log}","level":"Debug"}}"#),
    );
    c.ok(
        "PUT",
        "/serial",
        r#"{"serial_out_path":"/tmp/ec1-serial.out"}"#,
    );
    let r = c.get("/vm/config");
    assert_eq!(r.status, 200);
    let body = r.body.unwrap();
    assert_eq!(body["boot-source"]["kernel_image_path"], k.as_str());
    assert_eq!(body["machine-config"]["vcpu_count"], 2);
    assert_eq!(body["drives"][0]["partuuid"], "abcd-01");
    assert_eq!(body["logger"]["level"], "Debug");
    let text = body.to_string();
    assert!(!text.contains("null"), "{text}");
    let parsed = VmConfigFile::parse(&text).unwrap();
    assert_eq!(serde_json::to_value(&parsed).unwrap(), body);
    // Feeding it to a fresh VMM configures the same machine.
    let t2 = TestVmm::new();
    let path = t2.dir.path().join("vm.json");
    std::fs::write(&path, &text).unwrap();
    ec1_api::config_file::apply(&t2.vmm, parsed, &path).unwrap();
    assert_eq!(t2.client().get("/vm/config").body.unwrap(), body);
    t.boot();
    assert_eq!(
        c.get("/vm/config").body.unwrap()["machine-config"]["mem_size_mib"],
        256
    );
}

#[test]
fn boot_timer_logs_firecrackers_line() {
    let t = TestVmm::with(
        FakeBehaviour {
            boot_signal: false,
            ..Default::default()
        },
        51200,
    );
    let log = t.file("fc.log");
    let mut c = t.client();
    c.ok("PUT", "/logger", &format!(r#"{{"log_path":"{log}"}}"#));
    t.boot();
    std::thread::sleep(Duration::from_millis(20));
    t.engine.emit(EngineEvent::GuestBootSignal {
        at: std::time::Instant::now(),
    });
    t.engine.emit(EngineEvent::GuestBootSignal {
        at: std::time::Instant::now(),
    });
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<_> = text
        .lines()
        .filter(|l| l.contains("Guest-boot-time = "))
        .collect();
    assert_eq!(lines.len(), 1, "{text}");
    let re_ok = lines[0]
        .split("Guest-boot-time = ")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .collect::<Vec<_>>();
    // "{us} us {ms} ms, {cpu_us} CPU us {cpu_ms} CPU ms"
    assert_eq!(re_ok[1], "us");
    assert_eq!(re_ok[3], "ms,");
    assert_eq!(&re_ok[5..], ["CPU", "us", re_ok[7], "CPU", "ms"]);
    let us: u64 = re_ok[0].parse().unwrap();
    assert!(us >= 20_000, "{us}");
    assert_eq!(re_ok[2].parse::<u64>().unwrap(), us / 1000);
}

#[test]
fn balloon_statistics_need_an_interval() {
    let t = TestVmm::new();
    let mut c = t.client();
    c.ok(
        "PUT",
        "/balloon",
        r#"{"amount_mib":0,"deflate_on_oom":false,"free_page_reporting":true}"#,
    );
    t.boot();
    assert!(
        t.engine
            .spec()
            .unwrap()
            .devices
            .balloon
            .unwrap()
            .free_page_reporting
    );
    assert!(c
        .bad("GET", "/balloon/statistics", None)
        .contains("Statistics for the balloon device are not enabled"));
    assert!(c
        .bad(
            "PATCH",
            "/balloon/statistics",
            Some(r#"{"stats_polling_interval_s":1}"#)
        )
        .contains("Cannot enable or disable"));
}
