//! The process-global rendezvous that pairs ranks which are threads of one process: a registry
//! of groups keyed by name, each group a two-phase barrier with a call counter.
//!
//! A collective call publishes the rank's [`Slot`] (input and output addresses, a signature of
//! the call) and waits until every rank of the group has published its slot for the same call
//! (the k-th call of each rank matches the k-th of the others). Then every rank runs its share
//! of the work over all slots, and a second barrier keeps everyone inside the call until all
//! ranks finished reading and writing the others' buffers.
//!
//! The first barrier has a timeout: a rank that never arrives poisons the group with an error
//! naming the missing ranks; so does a rank that drops its last kernel while others wait for
//! it, and a call whose signature differs across ranks. A poisoned group fails every later
//! call at once. The second barrier has no timeout: only ranks that already arrived are in it,
//! and their work is bounded and cannot unwind. A group is removed from the registry when the
//! last [`Member`] (one per kernel) of any rank is dropped.

use crate::error::CollectiveError;
use rtllm_plugin_api::{DType, PluginError};
use std::collections::HashMap;
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant};

/// The environment variable that sets the first barrier's timeout in milliseconds.
pub const TIMEOUT_ENV: &str = "RTLLM_COLLECTIVE_TIMEOUT_MS";
/// The timeout when [`TIMEOUT_ENV`] is not set.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// The barrier timeout from [`TIMEOUT_ENV`] (a positive number of milliseconds), or the default.
pub fn timeout_from_env() -> Result<Duration, PluginError> {
    parse_timeout(std::env::var_os(TIMEOUT_ENV).as_deref())
}

/// A timeout setting: `None` is the default, else a positive number of milliseconds.
pub fn parse_timeout(raw: Option<&std::ffi::OsStr>) -> Result<Duration, PluginError> {
    let Some(raw) = raw else { return Ok(DEFAULT_TIMEOUT) };
    raw.to_str().and_then(|s| s.trim().parse::<u64>().ok()).filter(|&ms| ms > 0).map(Duration::from_millis).ok_or_else(
        || PluginError::new(format!("{TIMEOUT_ENV} must be a positive number of milliseconds, got {raw:?}")),
    )
}

/// What a call is, compared across ranks: the op, the dtype and x's `[outer, len, inner]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Signature {
    pub what: &'static str,
    pub dtype: DType,
    pub dims: [usize; 3],
}

impl fmt::Display for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [o, l, i] = self.dims;
        write!(f, "{} of {} [outer {o}, axis {l}, inner {i}]", self.what, self.dtype)
    }
}

/// What one rank brings to a call: addresses of its input and output, and the signature.
#[derive(Clone, Copy, Debug)]
pub struct Slot {
    pub input: usize,
    pub output: usize,
    pub sig: Signature,
}

struct State {
    /// Live members (kernels) per rank.
    members: Vec<usize>,
    /// The number of the call being assembled.
    call: u64,
    slots: Vec<Option<Slot>>,
    arrived: usize,
    done: usize,
    /// Calls whose first barrier completed.
    started: u64,
    /// Calls whose second barrier completed.
    completed: u64,
    poison: Option<String>,
}

struct Group {
    name: String,
    world: usize,
    state: Mutex<State>,
    cv: Condvar,
}

impl Group {
    fn lock(&self) -> MutexGuard<'_, State> {
        // The state is only touched by code that cannot panic while holding it; recover anyway so
        // the second barrier always completes.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn poisoned(&self, reason: &str) -> CollectiveError {
        CollectiveError::Poisoned { group: self.name.clone(), reason: reason.to_string() }
    }
}

fn registry() -> &'static Mutex<HashMap<String, Arc<Group>>> {
    static GROUPS: OnceLock<Mutex<HashMap<String, Arc<Group>>>> = OnceLock::new();
    GROUPS.get_or_init(|| Mutex::new(HashMap::new()))
}

/// One kernel's membership of a group as one rank; leaving happens on drop.
pub struct Member {
    group: Arc<Group>,
    key: String,
    rank: usize,
}

impl Member {
    /// Joins (creating when needed) the group registered under `key` (`name` is the group id
    /// messages show) as `rank` of `world`.
    pub fn join(key: &str, name: &str, world: usize, rank: usize) -> Result<Member, CollectiveError> {
        if rank >= world {
            return Err(CollectiveError::Work(format!("group '{name}': rank {rank} is not below world_size {world}")));
        }
        let mut groups = registry().lock().map_err(|_| CollectiveError::Registry)?;
        let group = groups
            .entry(key.to_string())
            .or_insert_with(|| {
                Arc::new(Group {
                    name: name.to_string(),
                    world,
                    state: Mutex::new(State {
                        members: vec![0; world],
                        call: 0,
                        slots: vec![None; world],
                        arrived: 0,
                        done: 0,
                        started: 0,
                        completed: 0,
                        poison: None,
                    }),
                    cv: Condvar::new(),
                })
            })
            .clone();
        if group.world != world {
            return Err(CollectiveError::WorldSize {
                group: name.to_string(),
                existing: group.world,
                requested: world,
                rank,
            });
        }
        group.lock().members[rank] += 1;
        Ok(Member { group, key: key.to_string(), rank })
    }

    pub fn rank(&self) -> usize {
        self.rank
    }

    pub fn world(&self) -> usize {
        self.group.world
    }

    /// Runs one collective call: publishes `slot`, waits (up to `timeout`) for every rank's
    /// slot of the same call, runs `work` over all slots (in rank order), then waits until
    /// every rank's work is done.
    pub fn collective<R>(
        &self,
        slot: Slot,
        timeout: Duration,
        work: impl FnOnce(&[Slot]) -> Result<R, PluginError>,
    ) -> Result<R, CollectiveError> {
        let (g, rank) = (&*self.group, self.rank);
        let mut st = g.lock();
        if let Some(reason) = &st.poison {
            return Err(g.poisoned(reason));
        }
        if st.slots[rank].is_some() {
            return Err(CollectiveError::Busy { group: g.name.clone(), rank });
        }
        let call = st.call;
        st.slots[rank] = Some(slot);
        st.arrived += 1;
        if st.arrived == g.world {
            st.started = call + 1;
            g.cv.notify_all();
        } else {
            let start = Instant::now();
            let deadline = start + timeout;
            while st.started <= call {
                if let Some(reason) = &st.poison {
                    return Err(g.poisoned(reason));
                }
                let now = Instant::now();
                if now >= deadline {
                    let missing: Vec<usize> = (0..g.world).filter(|&r| st.slots[r].is_none()).collect();
                    let arrived: Vec<usize> = (0..g.world).filter(|&r| st.slots[r].is_some()).collect();
                    let waited_ms = now.duration_since(start).as_millis();
                    st.poison = Some(format!(
                        "collective call #{call} timed out after {waited_ms} ms waiting for ranks {missing:?}"
                    ));
                    g.cv.notify_all();
                    return Err(CollectiveError::Timeout {
                        group: g.name.clone(),
                        call,
                        waited_ms,
                        world: g.world,
                        missing,
                        arrived,
                    });
                }
                st = g.cv.wait_timeout(st, deadline - now).unwrap_or_else(PoisonError::into_inner).0;
            }
        }
        let slots: Vec<Slot> = st.slots.iter().flatten().copied().collect();
        drop(st);

        let mismatch = slots
            .iter()
            .position(|s| s.sig != slots[0].sig)
            .map(|r| format!("rank 0 calls {}, rank {r} calls {}", slots[0].sig, slots[r].sig));
        let result = match &mismatch {
            Some(detail) => Err(CollectiveError::Mismatch { group: g.name.clone(), call, detail: detail.clone() }),
            None => match catch_unwind(AssertUnwindSafe(|| work(&slots))) {
                Ok(r) => r.map_err(|e| CollectiveError::Work(e.to_string())),
                Err(p) => Err(CollectiveError::Work(format!(
                    "group '{}': collective work panicked: {}",
                    g.name,
                    rtllm_plugin_api::author::panic_message(&p)
                ))),
            },
        };

        let mut st = g.lock();
        if let Some(detail) = mismatch {
            st.poison.get_or_insert_with(|| format!("collective call #{call} did not match across ranks: {detail}"));
        }
        st.done += 1;
        if st.done == g.world {
            st.slots.iter_mut().for_each(|s| *s = None);
            st.arrived = 0;
            st.done = 0;
            st.call = call + 1;
            st.completed = call + 1;
            g.cv.notify_all();
        } else {
            while st.completed <= call {
                st = g.cv.wait(st).unwrap_or_else(PoisonError::into_inner);
            }
        }
        result
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        let mut groups = registry().lock().unwrap_or_else(PoisonError::into_inner);
        let g = &*self.group;
        let mut st = g.lock();
        st.members[self.rank] = st.members[self.rank].saturating_sub(1);
        if st.members[self.rank] == 0 && st.arrived > 0 && st.slots[self.rank].is_none() && st.poison.is_none() {
            let waiting: Vec<usize> = (0..g.world).filter(|&r| st.slots[r].is_some()).collect();
            st.poison = Some(format!(
                "rank {} dropped its last kernel of the group while ranks {waiting:?} wait for it in collective call #{}",
                self.rank, st.call
            ));
            g.cv.notify_all();
        }
        let empty = st.members.iter().all(|&m| m == 0);
        drop(st);
        if empty && groups.get(&self.key).is_some_and(|current| Arc::ptr_eq(current, &self.group)) {
            groups.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(rank: usize) -> Slot {
        Slot { input: rank, output: 0, sig: Signature { what: "t", dtype: DType::F32, dims: [1, 1, 1] } }
    }

    #[test]
    fn timeouts_parse() {
        use std::ffi::OsStr;
        assert_eq!(parse_timeout(None).unwrap(), DEFAULT_TIMEOUT);
        assert_eq!(parse_timeout(Some(OsStr::new(" 250 "))).unwrap(), Duration::from_millis(250));
        for bad in ["0", "-3", "soon", ""] {
            let e = parse_timeout(Some(OsStr::new(bad))).unwrap_err();
            assert!(e.message().contains("RTLLM_COLLECTIVE_TIMEOUT_MS must be a positive number"), "{e}");
        }
    }

    #[test]
    fn calls_pair_in_order_and_groups_are_released() {
        let key = "test/rendezvous-order";
        std::thread::scope(|s| {
            for rank in 0..3 {
                s.spawn(move || {
                    let m = Member::join(key, "order", 3, rank).unwrap();
                    for call in 0..50usize {
                        let got = m
                            .collective(slot(rank * 1000 + call), Duration::from_secs(30), |slots| {
                                Ok(slots.iter().map(|s| s.input).collect::<Vec<_>>())
                            })
                            .unwrap();
                        assert_eq!(got, vec![call, 1000 + call, 2000 + call]);
                    }
                });
            }
        });
        assert!(registry().lock().unwrap().get(key).is_none(), "the group is released with its last member");
    }

    #[test]
    fn world_size_conflicts_and_signature_mismatches_are_errors() {
        let a = Member::join("test/rendezvous-world", "w", 2, 0).unwrap();
        let e = Member::join("test/rendezvous-world", "w", 3, 1).err().unwrap();
        assert!(e.to_string().contains("has world_size 2"), "{e}");
        drop(a);
        let key = "test/rendezvous-mismatch";
        let errs: Vec<String> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..2)
                .map(|rank| {
                    s.spawn(move || {
                        let m = Member::join(key, "mm", 2, rank).unwrap();
                        let mut sl = slot(rank);
                        sl.sig.dims[0] = rank + 1;
                        m.collective(sl, Duration::from_secs(30), |_| Ok(())).unwrap_err().to_string()
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for e in errs {
            assert!(e.contains("does not match across ranks") && e.contains("rank 1 calls t of f32 [outer 2"), "{e}");
        }
    }
}
