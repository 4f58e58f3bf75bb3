//! Conformance checks (`rtllm plugins check`): runs every registered provider on its own
//! examples with fresh random inputs — CPU providers through the host pool, CUDA providers on
//! the first GPU (skipped, with the reason, where there is none) — and compares with the
//! built-in reference (or, for ops without one, the best other CPU provider).

pub mod compare;
pub mod inputs;

use super::{infer_with, run_on_device, run_on_host, OpError, Provider, Registry};
use crate::device::CudaDevice;
use crate::host_pool::HostPool;
use crate::reference::{self, HostTensor};
use rand::rngs::StdRng;
use rand::SeedableRng;
use rtllm_plugin_api::{DeviceKind, OpExample, TensorMeta};
use std::path::PathBuf;
use std::sync::Arc;

/// Which providers to check, and the seed of the random inputs.
#[derive(Clone, Debug, Default)]
pub struct CheckOptions {
    /// Only this op.
    pub op: Option<String>,
    /// Only these plugins (empty: all).
    pub plugins: Vec<String>,
    /// Seed of the random inputs; `None`: a fresh one (reported, so a failure can be rerun).
    pub seed: Option<u64>,
    /// Only providers for this device.
    pub device: Option<DeviceKind>,
}

/// Where a provider's kernel runs during a check.
enum Runner<'a> {
    Host(&'a HostPool),
    Gpu(&'a Arc<CudaDevice>),
}

impl Runner<'_> {
    fn run(
        &self,
        p: &Provider,
        inputs: &mut [HostTensor],
        attrs: &rtllm_plugin_api::Attrs,
    ) -> Result<Vec<HostTensor>, OpError> {
        match self {
            Runner::Host(pool) => run_on_host(p, inputs, attrs, pool),
            Runner::Gpu(device) => run_on_device(p, inputs, attrs, device),
        }
    }
}

/// What checking one example of one provider found.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// Compared with a reference.
    Compared { reference: String, max_abs: f64, max_rel: f64, tolerance: f64, passed: bool, worst: String },
    /// No reference exists: the kernel ran; `finite` says whether every output was finite.
    Unverified { finite: bool },
    /// Running the provider (or its reference) failed.
    Failed(String),
    /// Not checked (e.g. a CUDA provider, or one without examples).
    Skipped(String),
}

impl Outcome {
    pub fn is_failure(&self) -> bool {
        matches!(
            self,
            Outcome::Compared { passed: false, .. } | Outcome::Unverified { finite: false } | Outcome::Failed(_)
        )
    }
}

/// One check of one provider on one example.
#[derive(Clone, Debug, PartialEq)]
pub struct KernelCheck {
    pub op: String,
    pub plugin: String,
    pub plugin_version: String,
    pub path: PathBuf,
    pub device: DeviceKind,
    /// Index into the provider's examples (`None` when none were run).
    pub example: Option<usize>,
    /// `f32[5, 64] q4_k[32, 256]`.
    pub shapes: String,
    pub attrs: String,
    pub outcome: Outcome,
}

/// Every check that ran, the seed used, and the plugins that failed to load.
#[derive(Clone, Debug)]
pub struct CheckReport {
    pub seed: u64,
    pub kernels: Vec<KernelCheck>,
    pub load_errors: Vec<super::LoadError>,
}

impl CheckReport {
    /// True when no kernel check failed (load errors are reported separately).
    pub fn passed(&self) -> bool {
        !self.kernels.iter().any(|k| k.outcome.is_failure())
    }

    pub fn failures(&self) -> impl Iterator<Item = &KernelCheck> {
        self.kernels.iter().filter(|k| k.outcome.is_failure())
    }
}

/// Runs the checks `opts` selects on `pool`.
pub fn check(registry: &Registry, opts: &CheckOptions, pool: &HostPool) -> CheckReport {
    let seed = opts.seed.unwrap_or_else(rand::random);
    let mut kernels = Vec::new();
    let mut gpu: Option<Result<Arc<CudaDevice>, String>> = None;
    for (op, providers) in registry.ops() {
        if opts.op.as_deref().is_some_and(|o| o != op) {
            continue;
        }
        for provider in providers {
            if !opts.plugins.is_empty() && !opts.plugins.contains(&provider.plugin) {
                continue;
            }
            if opts.device.is_some_and(|d| d != provider.device()) {
                continue;
            }
            let runner = match provider.device() {
                DeviceKind::Cpu => Ok(Runner::Host(pool)),
                DeviceKind::Cuda => match gpu.get_or_insert_with(|| CudaDevice::open(0).map_err(|e| e.to_string())) {
                    Ok(d) => Ok(Runner::Gpu(d)),
                    Err(e) => Err(e.clone()),
                },
            };
            check_provider(registry, provider, seed, runner, pool, &mut kernels);
        }
    }
    CheckReport { seed, kernels, load_errors: registry.load_errors().to_vec() }
}

fn check_provider(
    registry: &Registry,
    p: &Provider,
    seed: u64,
    runner: Result<Runner<'_>, String>,
    pool: &HostPool,
    out: &mut Vec<KernelCheck>,
) {
    let entry = |example: Option<usize>, ex: Option<&OpExample>, outcome| KernelCheck {
        op: p.op().to_string(),
        plugin: p.plugin.clone(),
        plugin_version: p.plugin_version.clone(),
        path: p.path.clone(),
        device: p.device(),
        example,
        shapes: ex.map(|e| shapes(&e.inputs)).unwrap_or_default(),
        attrs: ex.map(|e| e.attrs.to_string()).unwrap_or_default(),
        outcome,
    };
    let runner = match runner {
        Ok(r) => r,
        Err(why) => {
            out.push(entry(None, None, Outcome::Skipped(format!("no {} device to run on: {why}", p.device()))));
            return;
        }
    };
    let examples = (p.decl.examples)().into_vec();
    if examples.is_empty() {
        out.push(entry(None, None, Outcome::Skipped("the provider declares no examples".into())));
        return;
    }
    for (i, ex) in examples.iter().enumerate() {
        let mut rng = StdRng::seed_from_u64(mix(seed, &[p.op(), &p.plugin, &i.to_string()]));
        let outcome = check_example(registry, p, ex, &mut rng, &runner, pool).unwrap_or_else(Outcome::Failed);
        out.push(entry(Some(i), Some(ex), outcome));
    }
}

fn check_example(
    registry: &Registry,
    p: &Provider,
    ex: &OpExample,
    rng: &mut StdRng,
    runner: &Runner<'_>,
    pool: &HostPool,
) -> Result<Outcome, String> {
    let op = p.op();
    let metas = ex.inputs.as_slice();
    let inputs = inputs::generate(op, metas, &ex.attrs, rng)?;
    let out_metas = infer_with(p, metas, &ex.attrs).map_err(|e| e.to_string())?;
    let mut got_inputs = inputs.clone();
    let got = runner.run(p, &mut got_inputs, &ex.attrs).map_err(|e| e.to_string())?;

    let mut want_inputs = inputs;
    let (reference, want, compared_inputs): (String, Vec<HostTensor>, Vec<usize>) = if reference::has_reference(op) {
        let want = reference::run_reference(op, &mut want_inputs, &ex.attrs).map_err(|e| format!("reference: {e}"))?;
        ("built-in".into(), want, p.in_place())
    } else if let Some(other) = reference_provider(registry, p, metas) {
        let want = run_on_host(other, &mut want_inputs, &ex.attrs, pool).map_err(|e| format!("reference: {e}"))?;
        (format!("{} {}", other.plugin, other.plugin_version), want, (0..metas.len()).collect())
    } else {
        let finite = got.iter().all(|t| t.to_f64().is_ok_and(|v| v.iter().all(|x| x.is_finite())));
        return Ok(Outcome::Unverified { finite });
    };
    if got.len() != want.len() {
        return Err(format!("the kernel produced {} outputs, the reference {}", got.len(), want.len()));
    }
    let tolerance = compare::tolerance(op, metas, &out_metas);
    let mut pairs: Vec<(String, &HostTensor, &HostTensor)> =
        got.iter().zip(&want).enumerate().map(|(i, (g, w))| (format!("output {i}"), g, w)).collect();
    for &i in &compared_inputs {
        if let (Some(g), Some(w)) = (got_inputs.get(i), want_inputs.get(i)) {
            pairs.push((format!("input {i} (after)"), g, w));
        }
    }
    let (mut max_abs, mut max_rel, mut worst) = (0f64, 0f64, String::new());
    for (name, g, w) in pairs {
        if g.shape != w.shape {
            return Err(format!("{name} has shape {:?}, the reference {:?}", g.shape, w.shape));
        }
        let (gv, wv) = (g.to_f64().map_err(|e| e.to_string())?, w.to_f64().map_err(|e| e.to_string())?);
        let d = compare::diff(&gv, &wv);
        if d.max_rel > max_rel || worst.is_empty() {
            worst = match (gv.get(d.worst), wv.get(d.worst)) {
                (Some(a), Some(b)) => format!("{name}[{}]: got {a}, want {b}", d.worst),
                _ => name.clone(),
            };
        }
        max_abs = max_abs.max(d.max_abs);
        max_rel = max_rel.max(d.max_rel);
    }
    Ok(Outcome::Compared { reference, max_abs, max_rel, tolerance, passed: max_rel <= tolerance, worst })
}

/// The best other CPU provider of the same op that handles the dtypes `p` is being run with
/// (another provider in the same plugin counts: a plugin may ship a simple reference of its op).
fn reference_provider<'r>(registry: &'r Registry, p: &Provider, metas: &[TensorMeta]) -> Option<&'r Provider> {
    let dtypes: Vec<_> = metas.iter().map(|m| m.dtype).filter(|d| p.dtypes().contains(d)).collect();
    registry.providers(p.op()).iter().find(|o| !std::ptr::eq(*o, p) && o.supports(DeviceKind::Cpu, &dtypes))
}

fn shapes(metas: &[TensorMeta]) -> String {
    metas.iter().map(|m| m.to_string()).collect::<Vec<_>>().join(" ")
}

/// FNV-1a of the seed and some names: a distinct, reproducible stream per provider/example.
fn mix(seed: u64, parts: &[&str]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64 ^ seed;
    for part in parts {
        for b in part.bytes().chain([0xff]) {
            h ^= b as u64;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}
