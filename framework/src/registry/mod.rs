//! The plugin registry: discovers and loads kernel plugin dylibs, indexes their ops by name,
//! resolves an op request (name, device, dtypes, optional pin) to one provider, and wraps the
//! providers' `infer`/`create`/`launch` hooks so errors name the op and the plugin.
//!
//! ```no_run
//! use rtllm::registry::{DiscoveryOptions, OpRequest, Registry};
//! use rtllm_plugin_api::{DeviceKind, DType};
//! let registry = Registry::load(&DiscoveryOptions::default());
//! let provider = registry.resolve(&OpRequest::new("matmul", DeviceKind::Cpu, [DType::F32]))?;
//! println!("matmul from {} ({})", provider.plugin, provider.path.display());
//! # Ok::<(), rtllm::registry::ResolveError>(())
//! ```

pub mod call;
pub mod check;
pub mod device_call;
pub mod discover;
mod elf;
pub mod load;
pub mod resolve;

pub use call::{create_with, infer_with, launch_with, run_on_host, workspace_with, OpError, OpStage};
pub use device_call::{generate_on_device, run_on_device};
pub use discover::{DiscoveryOptions, PLUGIN_PATH_ENV};
pub use load::{LoadError, LoadErrorKind};
pub use resolve::{OpRequest, ResolveError};

use load::{load_candidate, LoadOutcome};
use rtllm_plugin_api::{DType, DeviceKind, OpDecl};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

/// One provider of an op: which plugin (and file) serves it, and its declaration.
pub struct Provider {
    pub plugin: String,
    pub plugin_version: String,
    pub path: PathBuf,
    pub decl: OpDecl,
}

impl Provider {
    pub fn op(&self) -> &str {
        self.decl.name.as_str()
    }
    pub fn device(&self) -> DeviceKind {
        self.decl.device
    }
    pub fn dtypes(&self) -> &[DType] {
        self.decl.dtypes.as_slice()
    }
    pub fn priority(&self) -> i32 {
        self.decl.priority
    }
    /// The inputs a launch writes in place (declared by the provider).
    pub fn in_place(&self) -> Vec<usize> {
        self.decl.in_place.iter().map(|&i| i as usize).collect()
    }
    /// Whether this provider handles `device` and every dtype in `dtypes`.
    pub fn supports(&self, device: DeviceKind, dtypes: &[DType]) -> bool {
        self.decl.device == device && dtypes.iter().all(|d| self.decl.dtypes.contains(d))
    }
    /// `plugin 0.1.0 (cpu; f32,bf16; priority 0)`: for listings and error messages.
    pub fn describe(&self) -> String {
        format!(
            "{} {} ({}; {}; priority {})",
            self.plugin,
            self.plugin_version,
            self.decl.device,
            dtype_list(self.dtypes()),
            self.decl.priority
        )
    }
}

impl std::fmt::Debug for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Provider")
            .field("op", &self.op())
            .field("plugin", &self.plugin)
            .field("plugin_version", &self.plugin_version)
            .field("path", &self.path)
            .field("device", &self.device())
            .field("dtypes", &self.dtypes())
            .field("priority", &self.priority())
            .finish()
    }
}

/// `f32,bf16`.
pub fn dtype_list(dtypes: &[DType]) -> String {
    dtypes.iter().map(|d| d.name()).collect::<Vec<_>>().join(",")
}

/// A plugin that loaded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PluginInfo {
    pub name: String,
    pub version: String,
    pub path: PathBuf,
    pub num_ops: usize,
}

/// Every loaded op provider, by op name; the load errors; the pins from config.
#[derive(Default)]
pub struct Registry {
    /// Providers of each op, best first: priority (high first), then plugin name, then path.
    ops: BTreeMap<String, Vec<Provider>>,
    plugins: Vec<PluginInfo>,
    load_errors: Vec<LoadError>,
    pins: HashMap<String, String>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("plugins", &self.plugins)
            .field("ops", &self.ops.keys().collect::<Vec<_>>())
            .field("load_errors", &self.load_errors)
            .field("pins", &self.pins)
            .finish()
    }
}

impl Registry {
    /// An empty registry (no plugins).
    pub fn empty() -> Registry {
        Registry::default()
    }

    /// Discovers and loads plugins. Broken plugins are recorded in [`Registry::load_errors`]
    /// (and logged); the others still load.
    pub fn load(opts: &DiscoveryOptions) -> Registry {
        let mut registry = Registry::default();
        registry.load_more(opts);
        registry
    }

    /// Loads exactly these files/directories (no environment, no executable directory).
    pub fn load_paths(paths: impl IntoIterator<Item = impl Into<PathBuf>>) -> Registry {
        Registry::load(&DiscoveryOptions::only(paths))
    }

    /// Adds ops declared in this process (not loaded from a dylib) as plugin `name` `version`:
    /// for tests, and for programs that link their kernels in. They resolve like any other.
    pub fn add_in_process(&mut self, name: &str, version: &str, ops: Vec<OpDecl>) {
        let path = PathBuf::from(format!("(in process: {name})"));
        self.add_plugin(load::LoadedPlugin { name: name.into(), version: version.into(), path, ops });
    }

    /// Discovers and loads more plugins into this registry; files already loaded are skipped.
    pub fn load_more(&mut self, opts: &DiscoveryOptions) {
        let (candidates, problems) = discover::candidates(opts);
        for p in problems {
            self.record_error(LoadError::new(&p.path, LoadErrorKind::Missing(p.reason)));
        }
        for c in candidates {
            if self.plugins.iter().any(|p| p.path == c.path) {
                continue;
            }
            match load_candidate(&c, opts.device) {
                LoadOutcome::Loaded(plugin) => self.add_plugin(plugin),
                LoadOutcome::Skipped(why) => tracing::debug!("skipping {}: {why}", c.path.display()),
                LoadOutcome::Failed(e) => self.record_error(e),
            }
        }
    }

    fn record_error(&mut self, e: LoadError) {
        tracing::warn!("{e}");
        self.load_errors.push(e);
    }

    fn add_plugin(&mut self, plugin: load::LoadedPlugin) {
        if let Some(other) = self.plugins.iter().find(|p| p.name == plugin.name) {
            tracing::warn!(
                "plugin '{}' is loaded twice: {} and {}; both provide ops (ties go to the first path)",
                plugin.name,
                other.path.display(),
                plugin.path.display()
            );
        }
        tracing::debug!(
            "loaded plugin {} {} from {} ({} ops)",
            plugin.name,
            plugin.version,
            plugin.path.display(),
            plugin.ops.len()
        );
        self.plugins.push(PluginInfo {
            name: plugin.name.clone(),
            version: plugin.version.clone(),
            path: plugin.path.clone(),
            num_ops: plugin.ops.len(),
        });
        for decl in plugin.ops {
            let provider = Provider {
                plugin: plugin.name.clone(),
                plugin_version: plugin.version.clone(),
                path: plugin.path.clone(),
                decl,
            };
            let list = self.ops.entry(provider.op().to_string()).or_default();
            list.push(provider);
            list.sort_by(|a, b| {
                b.priority()
                    .cmp(&a.priority())
                    .then_with(|| a.plugin.cmp(&b.plugin))
                    .then_with(|| a.path.cmp(&b.path))
                    .then_with(|| a.device().cmp(&b.device()))
            });
        }
        self.plugins.sort_by(|a, b| a.name.cmp(&b.name).then_with(|| a.path.cmp(&b.path)));
    }

    /// Pins from config: op name → plugin name. A request's own pin overrides these.
    pub fn set_pins(&mut self, pins: HashMap<String, String>) {
        self.pins = pins;
    }

    /// Builder form of [`Registry::set_pins`].
    pub fn with_pins(mut self, pins: HashMap<String, String>) -> Registry {
        self.set_pins(pins);
        self
    }

    pub fn pins(&self) -> &HashMap<String, String> {
        &self.pins
    }

    /// The providers of `name`, best first (empty if none).
    pub fn providers(&self, name: &str) -> &[Provider] {
        self.ops.get(name).map(Vec::as_slice).unwrap_or(&[])
    }

    /// Whether some plugin provides `name` on `device`.
    pub fn has_op(&self, name: &str, device: DeviceKind) -> bool {
        self.providers(name).iter().any(|p| p.device() == device)
    }

    /// Every registered op name with its providers (best first), sorted by name.
    pub fn ops(&self) -> impl Iterator<Item = (&str, &[Provider])> {
        self.ops.iter().map(|(k, v)| (k.as_str(), v.as_slice()))
    }

    /// The registered op names, sorted.
    pub fn op_names(&self) -> Vec<&str> {
        self.ops.keys().map(String::as_str).collect()
    }

    /// The plugins that loaded, sorted by name.
    pub fn plugins(&self) -> &[PluginInfo] {
        &self.plugins
    }

    /// The plugin files that failed to load.
    pub fn load_errors(&self) -> &[LoadError] {
        &self.load_errors
    }
}
