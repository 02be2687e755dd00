use std::sync::Arc;
use std::time::Instant;

/// How a guest ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExitReason {
    /// The guest rebooted or powered off (Firecracker ends the VMM with status 0).
    GuestShutdown,
    /// [`crate::Engine::stop`] ended it.
    Stopped,
    /// The engine process died on its own (crash, killed from outside).
    EngineCrashed { status: String, stderr: String },
}

/// Something the engine observed in the guest, delivered as it happens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EngineEvent {
    /// The guest wrote the boot-complete byte (123) to the engine's boot-timer port.
    GuestBootSignal { at: Instant },
    /// The guest has ended; no event follows.
    Exited { at: Instant, reason: ExitReason },
}

/// Where an engine sends [`EngineEvent`]s. Called from the engine's own threads: keep it
/// short and non-blocking.
pub type EventSink = Arc<dyn Fn(EngineEvent) + Send + Sync>;
