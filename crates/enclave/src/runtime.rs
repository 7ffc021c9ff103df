//! What runs work orders inside an enclave, whoever holds the keys: the workloads, their state
//! turns, the sealing of their state through the platform, and the limits an order is held to.
//! A singleton worker and a WPE each have one.

use std::collections::BTreeMap;
use std::sync::Arc;

use afallon_attest::{Platform, SealError};
use afallon_workloads::{Registry, Workload};

use crate::state::{StateSlot, StateTurn};
use crate::{EnclaveConfig, EnclaveError, SealedState, WorkloadInfo};

/// The workloads of one worker (or pool) and their state.
pub(crate) struct Runtime {
    pub(crate) platform: Arc<dyn Platform>,
    pub(crate) registry: Registry,
    pub(crate) config: EnclaveConfig,
    /// Each workload's turn, held by a stateful workload's order until its state change is
    /// committed or rolled back.
    state_slots: BTreeMap<&'static str, Arc<StateSlot>>,
}

impl Runtime {
    /// The workloads of `registry`, in their initial states.
    pub(crate) fn new(
        platform: Arc<dyn Platform>,
        registry: Registry,
        config: EnclaveConfig,
    ) -> Self {
        let state_slots = registry.names().map(|name| (name, Arc::default())).collect();
        Self { platform, registry, config, state_slots }
    }

    /// The workloads in the states sealed before (at a restart).
    pub(crate) fn restore(
        platform: Arc<dyn Platform>,
        registry: Registry,
        config: EnclaveConfig,
        states: &[SealedState],
    ) -> Result<Self, EnclaveError> {
        for state in states {
            let workload = registry
                .get(&state.workload)
                .ok_or_else(|| EnclaveError::UnknownWorkload(state.workload.clone()))?;
            let snapshot = platform
                .unseal(&state_label(&state.workload, state.version), &state.blob)
                .or_else(|_| {
                    // Sealed before the version was sealed with the state: accepted at a
                    // restart only (docs/security.md).
                    platform.unseal(&legacy_state_label(&state.workload), &state.blob)
                })?;
            workload.restore(&snapshot).map_err(|error| EnclaveError::WorkloadState {
                workload: state.workload.clone(),
                error,
            })?;
        }
        let runtime = Self::new(platform, registry, config);
        for state in states {
            if let Some(slot) = runtime.state_slots.get(state.workload.as_str()) {
                slot.set_version(state.version);
            }
        }
        Ok(runtime)
    }

    /// The workloads it runs, for the host.
    pub(crate) fn workloads(&self) -> Vec<WorkloadInfo> {
        self.registry
            .names()
            .filter_map(|name| self.registry.get(name))
            .map(|workload| WorkloadInfo {
                name: workload.name().to_owned(),
                stateful: workload.stateful(),
            })
            .collect()
    }

    /// Waits for `workload`'s turn (see [`StateTurn`]) and takes it.
    pub(crate) fn hold_state(&self, workload: &Arc<dyn Workload>) -> Option<StateTurn> {
        self.state_slots.get(workload.name()).map(|slot| slot.hold(workload))
    }

    /// Seals `workload`'s state after an order, as the next version of the state `turn` was
    /// taken on.
    ///
    /// # Errors
    /// The platform's [`SealError`]: the order must then fail and change nothing.
    pub(crate) fn seal_workload_state(
        &self,
        workload: &str,
        snapshot: &[u8],
        turn: &mut StateTurn,
    ) -> Result<SealedState, SealError> {
        let based_on = turn.based_on();
        let version = based_on + 1;
        let blob = self.platform.seal(&state_label(workload, version), snapshot)?;
        turn.will_be(version);
        Ok(SealedState { workload: workload.to_owned(), version, based_on, blob })
    }

    /// Loads a workload's sealed state if it is newer than the one this enclave runs on: the
    /// change another process serving the same worker committed. Waits for the workload's turn
    /// (no order of it runs meanwhile). Returns whether it loaded anything; on an error the state
    /// is unchanged.
    pub(crate) fn load_state(&self, state: &SealedState) -> Result<bool, EnclaveError> {
        let workload = self
            .registry
            .get(&state.workload)
            .ok_or_else(|| EnclaveError::UnknownWorkload(state.workload.clone()))?;
        let Some(mut turn) = self.hold_state(workload) else {
            return Err(EnclaveError::UnknownWorkload(state.workload.clone()));
        };
        if state.version <= turn.based_on() {
            return Ok(false);
        }
        let snapshot =
            self.platform.unseal(&state_label(&state.workload, state.version), &state.blob)?;
        workload.restore(&snapshot).map_err(|error| EnclaveError::WorkloadState {
            workload: state.workload.clone(),
            error,
        })?;
        turn.will_be(state.version);
        turn.commit();
        Ok(true)
    }
}

/// What a workload's state is sealed under: its name and its version, so that a blob cannot be
/// passed off as another workload's state, nor an old state as a newer version (a host that
/// relabels an old blob with a higher version gets a blob that does not unseal).
fn state_label(workload: &str, version: u64) -> String {
    format!("workload-state:{workload}:v{version}")
}

/// The label of states sealed before their version was.
fn legacy_state_label(workload: &str) -> String {
    format!("workload-state:{workload}")
}
