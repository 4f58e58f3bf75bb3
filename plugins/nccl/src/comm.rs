//! NCCL communicators per (group, rank) for ranks that are threads of one process. The first
//! kernel of a rank creates the rank's communicator at `create`: rank 0 makes the
//! `ncclUniqueId`, the ranks exchange it through the in-process rendezvous (with its timeout,
//! so a rank that never comes is an error, not a hang), then each calls `ncclCommInitRank` on
//! its thread's current device with no lock held. Later kernels of the rank share it. When the
//! last kernel of the group (any rank) drops, its communicators are finalized and destroyed.

use crate::driver;
use crate::error::NcclError;
use crate::nccl_lib::{nccl, Nccl};
use crate::rendezvous::{Member, Signature, Slot};
use cudarc::nccl::sys::{ncclComm_t, ncclUniqueId};
use rtllm_plugin_api::shapes::collective::CollectiveAttrs;
use rtllm_plugin_api::{DType, PluginError};
use std::collections::HashMap;
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::Duration;

#[derive(Clone, Copy)]
struct Comm(ncclComm_t);
// SAFETY: an NCCL communicator handle may be used from any thread (one at a time per call).
unsafe impl Send for Comm {}

struct Entry {
    world: usize,
    comms: Vec<Option<Comm>>,
    initializing: Vec<bool>,
    refs: Vec<usize>,
}

fn registry() -> &'static Mutex<HashMap<String, Entry>> {
    static COMMS: OnceLock<Mutex<HashMap<String, Entry>>> = OnceLock::new();
    COMMS.get_or_init(|| Mutex::new(HashMap::new()))
}

/// What rank 0 hands the others in the id exchange.
#[derive(Clone, Copy)]
struct IdPayload {
    ok: bool,
    id: ncclUniqueId,
}

/// One kernel's share of its rank's communicator; releases it on drop.
pub struct CommLease {
    group: String,
    rank: usize,
    comm: ncclComm_t,
    nccl: &'static Nccl,
}

// SAFETY: the handle is only passed to NCCL, which may be called from any thread.
unsafe impl Send for CommLease {}
unsafe impl Sync for CommLease {}

enum Next {
    Ready(Comm),
    Init,
}

impl CommLease {
    /// This rank's communicator for `spec.group` (world_size > 1), created on first use.
    pub fn acquire(spec: &CollectiveAttrs, timeout: Duration) -> Result<CommLease, PluginError> {
        let device = driver::current_device(spec.rank)?;
        let nccl = nccl()?;
        let (group, rank, world) = (spec.group.clone(), spec.rank, spec.world_size);
        let next = {
            let mut map =
                registry().lock().map_err(|_| PluginError::new("the NCCL communicator registry is poisoned"))?;
            let entry = map.entry(group.clone()).or_insert_with(|| Entry {
                world,
                comms: vec![None; world],
                initializing: vec![false; world],
                refs: vec![0; world],
            });
            if entry.world != world {
                return Err(PluginError::new(format!(
                    "group '{group}' has world_size {}, a kernel of rank {rank} asked for world_size {world}",
                    entry.world
                )));
            }
            if entry.initializing[rank] {
                return Err(PluginError::new(format!(
                    "group '{group}': rank {rank}'s NCCL communicator is being created by another thread; create a \
                     rank's kernels from one thread"
                )));
            }
            entry.refs[rank] += 1;
            match entry.comms[rank] {
                Some(c) => Next::Ready(c),
                None => {
                    entry.initializing[rank] = true;
                    Next::Init
                }
            }
        };
        // From here on the lease owns one reference: every error path releases it on drop.
        let mut lease = CommLease { group, rank, comm: std::ptr::null_mut(), nccl };
        match next {
            Next::Ready(c) => {
                // SAFETY: the registry holds live communicators only (destroyed once removed).
                let comm_device = unsafe { nccl.comm_device(c.0) }?;
                if comm_device != device {
                    return Err(NcclError::WrongDevice {
                        group: lease.group.clone(),
                        rank,
                        comm_device,
                        current: device,
                    }
                    .into());
                }
                lease.comm = c.0;
            }
            Next::Init => {
                let made = init(nccl, spec, timeout);
                let mut map = registry().lock().unwrap_or_else(PoisonError::into_inner);
                if let Some(entry) = map.get_mut(&lease.group) {
                    entry.initializing[rank] = false;
                    if let Ok(c) = &made {
                        entry.comms[rank] = Some(Comm(*c));
                    }
                }
                lease.comm = made?;
            }
        }
        Ok(lease)
    }

    pub fn handle(&self) -> ncclComm_t {
        self.comm
    }

    pub fn nccl(&self) -> &'static Nccl {
        self.nccl
    }
}

/// Exchanges the unique id through the rendezvous and creates this rank's communicator.
fn init(nccl: &'static Nccl, spec: &CollectiveAttrs, timeout: Duration) -> Result<ncclComm_t, PluginError> {
    let (rank, world) = (spec.rank, spec.world_size);
    let key = format!("nccl-init/{}", spec.group);
    let member = Member::join(&key, &spec.group, world, rank)?;
    let mut own_err = None;
    let mine = if rank == 0 {
        match nccl.unique_id() {
            Ok(id) => IdPayload { ok: true, id },
            Err(e) => {
                own_err = Some(e);
                IdPayload { ok: false, id: ncclUniqueId { internal: [0; 128] } }
            }
        }
    } else {
        IdPayload { ok: false, id: ncclUniqueId { internal: [0; 128] } }
    };
    let sig = Signature { what: "nccl communicator creation", dtype: DType::U8, dims: [world, 1, 1] };
    let slot = Slot { input: &mine as *const IdPayload as usize, output: 0, sig };
    let root = member
        .collective(slot, timeout, |slots| {
            // SAFETY: rank 0's payload lives on its stack until every rank passed the second barrier.
            Ok(unsafe { *(slots[0].input as *const IdPayload) })
        })
        .map_err(|e| PluginError::new(format!("creating rank {rank}'s NCCL communicator: {e}")))?;
    drop(member);
    if let Some(e) = own_err {
        return Err(e.into());
    }
    if !root.ok {
        return Err(PluginError::new(format!(
            "group '{}': rank 0 could not create the NCCL unique id, so rank {rank} has no communicator",
            spec.group
        )));
    }
    Ok(nccl.comm_init_rank(world, root.id, rank)?)
}

impl Drop for CommLease {
    fn drop(&mut self) {
        let doomed: Vec<ncclComm_t> = {
            let mut map = registry().lock().unwrap_or_else(PoisonError::into_inner);
            let Some(entry) = map.get_mut(&self.group) else { return };
            entry.refs[self.rank] = entry.refs[self.rank].saturating_sub(1);
            if entry.refs.iter().any(|&r| r > 0) {
                return;
            }
            let comms = entry.comms.iter().flatten().map(|c| c.0).collect();
            map.remove(&self.group);
            comms
        };
        if !doomed.is_empty() {
            // SAFETY: no kernel of the group is left, so no one uses these handles any more.
            // A failure here cannot be reported from a drop; the handles are gone either way.
            let _ = unsafe { self.nccl.destroy_all(&doomed) };
        }
    }
}
