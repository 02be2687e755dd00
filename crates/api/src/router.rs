//! Path + method + body → [`VmmAction`], as Firecracker's `parsed_request.rs`: parsing
//! (and id checks) come before any state check, and the same wordings are used for
//! unknown routes, empty bodies and bodies that do not deserialize.

use serde::de::DeserializeOwned;

use crate::error::RequestError;
use crate::models::*;
use crate::validation::checked_id;

/// Everything the API can ask of the VMM.
#[derive(Debug, Clone, PartialEq)]
pub enum VmmAction {
    GetInstanceInfo,
    GetVersion,
    GetMachineConfig,
    GetFullVmConfig,
    GetBalloon,
    GetBalloonStats,
    GetBalloonHintingStatus,
    GetMmds,
    GetMemoryHotplug,
    StartMicroVm,
    FlushMetrics,
    SendCtrlAltDel,
    PutBalloon(BalloonDeviceConfig),
    PatchBalloon(BalloonUpdateConfig),
    PatchBalloonStats(BalloonUpdateStatsConfig),
    StartBalloonHinting(StartHintingCmd),
    StopBalloonHinting,
    PutBootSource(BootSourceConfig),
    PutCpuConfig(CustomCpuTemplate),
    PutDrive(BlockDeviceConfig),
    PatchDrive(BlockDeviceUpdateConfig),
    DeleteDrive(String),
    PutPmem(PmemConfig),
    PatchPmem(PmemUpdateConfig),
    DeletePmem(String),
    PutLogger(LoggerConfig),
    PutMachineConfig(MachineConfigUpdate),
    PatchMachineConfig(MachineConfigUpdate),
    PutMetrics(MetricsConfig),
    PutMmds(serde_json::Value),
    PatchMmds(serde_json::Value),
    PutMmdsConfig(MmdsConfig),
    PutEntropy(EntropyDeviceConfig),
    PutSerial(SerialConfig),
    PutMemoryHotplug(MemoryHotplugConfig),
    PatchMemoryHotplug(MemoryHotplugSizeUpdate),
    PutNetwork(NetworkInterfaceConfig),
    PatchNetwork(NetworkInterfaceUpdateConfig),
    DeleteNetwork(String),
    CreateSnapshot(CreateSnapshotParams),
    LoadSnapshot(LoadSnapshotConfig),
    PatchVm(VmStateUpdate),
    PutVsock(VsockDeviceConfig),
}

fn body<T: DeserializeOwned>(b: &[u8]) -> Result<T, RequestError> {
    serde_json::from_slice(b).map_err(RequestError::serde)
}

fn id_matches(path_id: &str, body_id: &str) -> Result<(), RequestError> {
    if path_id != body_id {
        return Err(RequestError::Generic(
            "The id from the path does not match the id from the body!".into(),
        ));
    }
    Ok(())
}

fn invalid(method: &str, path: &str) -> RequestError {
    RequestError::InvalidPathMethod {
        method: method.to_string(),
        path: path.to_string(),
    }
}

/// The first path segment: the resource Firecracker's metrics and error messages name.
pub fn resource_of(path: &str) -> &str {
    path.trim_start_matches('/').split('/').next().unwrap_or("")
}

/// Parses one request. `body` is `None` when the request has no (or an empty) body.
pub fn parse_request(
    method: &str,
    path: &str,
    body_bytes: Option<&[u8]>,
) -> Result<VmmAction, RequestError> {
    let tokens: Vec<&str> = path.trim_start_matches('/').split_terminator('/').collect();
    let first = tokens.first().copied().unwrap_or("");
    use VmmAction as A;
    match (method, body_bytes) {
        ("GET", Some(_)) => Err(RequestError::Generic(
            "GET request cannot have a body.".into(),
        )),
        ("GET", None) => match tokens.as_slice() {
            [] => Ok(A::GetInstanceInfo),
            ["version"] => Ok(A::GetVersion),
            ["machine-config"] => Ok(A::GetMachineConfig),
            ["vm", "config"] => Ok(A::GetFullVmConfig),
            ["mmds"] => Ok(A::GetMmds),
            ["balloon"] => Ok(A::GetBalloon),
            ["balloon", "statistics"] => Ok(A::GetBalloonStats),
            ["balloon", "hinting", "status"] => Ok(A::GetBalloonHintingStatus),
            ["hotplug", "memory"] => Ok(A::GetMemoryHotplug),
            ["balloon", ..] => Err(invalid(method, path)),
            _ => Err(invalid(method, first)),
        },
        ("PUT", None) => Err(RequestError::Generic("Empty PUT request.".into())),
        ("PUT", Some(b)) => parse_put(&tokens, path, b),
        ("PATCH", b) => parse_patch(&tokens, path, b),
        ("DELETE", _) => match tokens.as_slice() {
            ["drives", id] => checked_id(id).map(|_| A::DeleteDrive(id.to_string())),
            ["pmem", id] => checked_id(id).map(|_| A::DeletePmem(id.to_string())),
            ["network-interfaces", id] => checked_id(id).map(|_| A::DeleteNetwork(id.to_string())),
            _ => Err(invalid(method, first)),
        },
        _ => Err(invalid(method, first)),
    }
}

fn parse_put(tokens: &[&str], path: &str, b: &[u8]) -> Result<VmmAction, RequestError> {
    use VmmAction as A;
    let first = tokens.first().copied().unwrap_or("");
    Ok(match tokens {
        ["actions"] => match body::<ActionBody>(b)?.action_type {
            ActionType::InstanceStart => A::StartMicroVm,
            ActionType::FlushMetrics => A::FlushMetrics,
            ActionType::SendCtrlAltDel => A::SendCtrlAltDel,
        },
        ["balloon"] => A::PutBalloon(body(b)?),
        ["boot-source"] => A::PutBootSource(body(b)?),
        ["cpu-config"] => A::PutCpuConfig(body(b)?),
        ["drives"] | ["pmem"] | ["network-interfaces"] => return Err(RequestError::EmptyId),
        ["drives", id] => {
            checked_id(id)?;
            let cfg: BlockDeviceConfig = body(b)?;
            id_matches(id, &cfg.drive_id)?;
            A::PutDrive(cfg)
        }
        ["pmem", id] => {
            checked_id(id)?;
            let cfg: PmemConfig = body(b)?;
            id_matches(id, &cfg.id)?;
            A::PutPmem(cfg)
        }
        ["network-interfaces", id] => {
            checked_id(id)?;
            let cfg: NetworkInterfaceConfig = body(b)?;
            id_matches(id, &cfg.iface_id)?;
            A::PutNetwork(cfg)
        }
        ["logger"] => A::PutLogger(body(b)?),
        ["serial"] => A::PutSerial(body(b)?),
        ["machine-config"] => A::PutMachineConfig(body::<MachineConfig>(b)?.into()),
        ["metrics"] => A::PutMetrics(body(b)?),
        ["mmds"] => A::PutMmds(body(b)?),
        ["mmds", "config"] => A::PutMmdsConfig(body(b)?),
        ["snapshot"] => {
            return Err(RequestError::Generic(
                "Missing snapshot operation type.".into(),
            ))
        }
        ["snapshot", "create"] => A::CreateSnapshot(body(b)?),
        ["snapshot", "load"] => {
            let cfg: LoadSnapshotConfig = body(b)?;
            match (&cfg.mem_backend, &cfg.mem_file_path) {
                (Some(_), Some(_)) => return Err(RequestError::SerdeJson(
                    "too many fields: either `mem_backend` or `mem_file_path` exclusively is required"
                        .into(),
                )),
                (None, None) => return Err(RequestError::SerdeJson(
                    "missing field: either `mem_backend` or `mem_file_path` is required".into(),
                )),
                _ => A::LoadSnapshot(cfg),
            }
        }
        ["vsock"] => A::PutVsock(body(b)?),
        ["entropy"] => A::PutEntropy(body(b)?),
        ["hotplug", "memory"] => A::PutMemoryHotplug(body(b)?),
        ["mmds", ..] | ["snapshot", ..] => return Err(invalid("PUT", path)),
        _ => return Err(invalid("PUT", first)),
    })
}

fn parse_patch(tokens: &[&str], path: &str, b: Option<&[u8]>) -> Result<VmmAction, RequestError> {
    use VmmAction as A;
    let first = tokens.first().copied().unwrap_or("");
    // Only the balloon's hinting commands may come without a body.
    match (tokens, b) {
        (["balloon", "hinting", "start"], None) => {
            return Ok(A::StartBalloonHinting(StartHintingCmd::default()))
        }
        (["balloon", "hinting", "stop"], _) => return Ok(A::StopBalloonHinting),
        (_, None) => return Err(RequestError::Generic("Empty PATCH request.".into())),
        _ => {}
    }
    let b = b.unwrap_or_default();
    Ok(match tokens {
        ["balloon"] => A::PatchBalloon(body(b)?),
        ["balloon", "statistics"] => A::PatchBalloonStats(body(b)?),
        ["balloon", "hinting", "start"] => A::StartBalloonHinting(body(b)?),
        ["drives"] | ["pmem"] | ["network-interfaces"] => return Err(RequestError::EmptyId),
        ["drives", id] => {
            checked_id(id)?;
            let cfg: BlockDeviceUpdateConfig = body(b)?;
            id_matches(id, &cfg.drive_id)?;
            A::PatchDrive(cfg)
        }
        ["pmem", id] => {
            checked_id(id)?;
            let cfg: PmemUpdateConfig = body(b)?;
            id_matches(id, &cfg.id)?;
            A::PatchPmem(cfg)
        }
        ["network-interfaces", id] => {
            checked_id(id)?;
            let cfg: NetworkInterfaceUpdateConfig = body(b)?;
            id_matches(id, &cfg.iface_id)?;
            A::PatchNetwork(cfg)
        }
        ["machine-config"] => {
            let u: MachineConfigUpdate = body(b)?;
            if u.is_empty() {
                return Err(RequestError::Generic("Empty PATCH request.".into()));
            }
            A::PatchMachineConfig(u)
        }
        ["mmds"] => A::PatchMmds(body(b)?),
        ["vm"] => A::PatchVm(body::<VmStateRequest>(b)?.state),
        ["hotplug", "memory"] => A::PatchMemoryHotplug(body(b)?),
        ["balloon", ..] => return Err(invalid("PATCH", path)),
        _ => return Err(invalid("PATCH", first)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(m: &str, path: &str, b: Option<&str>) -> Result<VmmAction, RequestError> {
        parse_request(m, path, b.map(str::as_bytes))
    }

    #[test]
    fn routes() {
        assert_eq!(p("GET", "/", None), Ok(VmmAction::GetInstanceInfo));
        assert_eq!(p("GET", "", None), Ok(VmmAction::GetInstanceInfo));
        assert_eq!(p("GET", "/vm/config", None), Ok(VmmAction::GetFullVmConfig));
        assert_eq!(
            p(
                "PUT",
                "/actions",
                Some(r#"{"action_type":"InstanceStart"}"#)
            ),
            Ok(VmmAction::StartMicroVm)
        );
        assert_eq!(
            p("PATCH", "/vm", Some(r#"{"state":"Paused"}"#)),
            Ok(VmmAction::PatchVm(VmStateUpdate::Paused))
        );
        assert_eq!(
            p("PATCH", "/balloon/hinting/stop", None),
            Ok(VmmAction::StopBalloonHinting)
        );
        assert_eq!(
            p("PATCH", "/balloon/hinting/start", None),
            Ok(VmmAction::StartBalloonHinting(StartHintingCmd::default()))
        );
        assert_eq!(
            p("DELETE", "/drives/rootfs", None),
            Ok(VmmAction::DeleteDrive("rootfs".into()))
        );
        assert_eq!(resource_of("/drives/x"), "drives");
        assert_eq!(resource_of("/"), "");
    }

    #[test]
    fn firecracker_errors() {
        assert_eq!(
            p("GET", "/foo/bar", None).unwrap_err().to_string(),
            "Invalid request method and/or path: GET foo."
        );
        assert_eq!(
            p("POST", "/actions", Some("{}")).unwrap_err().to_string(),
            "Invalid request method and/or path: POST actions."
        );
        assert_eq!(
            p("GET", "/", Some("x")).unwrap_err().to_string(),
            "GET request cannot have a body."
        );
        assert_eq!(
            p("PUT", "/actions", None).unwrap_err().to_string(),
            "Empty PUT request."
        );
        assert_eq!(
            p("PATCH", "/vm", None).unwrap_err().to_string(),
            "Empty PATCH request."
        );
        assert_eq!(
            p("PATCH", "/machine-config", Some("{}"))
                .unwrap_err()
                .to_string(),
            "Empty PATCH request."
        );
        assert_eq!(
            p("PUT", "/drives/a-b", Some("{}")).unwrap_err(),
            RequestError::InvalidId
        );
        assert_eq!(
            p("PUT", "/drives", Some("{}")).unwrap_err(),
            RequestError::EmptyId
        );
        assert_eq!(
            p(
                "PUT",
                "/drives/a",
                Some(r#"{"drive_id":"b","is_root_device":false,"path_on_host":"/x"}"#)
            )
            .unwrap_err()
            .to_string(),
            "The id from the path does not match the id from the body!"
        );
        let e = p(
            "PUT",
            "/machine-config",
            Some(r#"{"vcpu_count":1,"mem_size_mib":1,"foo":1}"#),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("An error occurred when deserializing the json body of a request: unknown field `foo`"),
            "{e}"
        );
        assert_eq!(
            p("PUT", "/snapshot", Some("{}")).unwrap_err().to_string(),
            "Missing snapshot operation type."
        );
        assert!(p("PUT", "/snapshot/x", Some("{}")).is_err());
        assert!(p("PUT", "/mmds/x", Some("{}")).is_err());
        let e = p("PUT", "/snapshot/load", Some(r#"{"snapshot_path":"s"}"#)).unwrap_err();
        assert!(e
            .to_string()
            .contains("either `mem_backend` or `mem_file_path` is required"));
        let e = p(
            "PUT",
            "/snapshot/load",
            Some(r#"{"snapshot_path":"s","mem_file_path":"m","mem_backend":{"backend_type":"File","backend_path":"m"}}"#),
        )
        .unwrap_err();
        assert!(e.to_string().contains("exclusively"));
        assert!(p("GET", "/balloon/nope", None).is_err());
        assert!(p("PATCH", "/balloon/nope", Some("{}")).is_err());
        assert!(p("DELETE", "/vm", None).is_err());
    }
}
