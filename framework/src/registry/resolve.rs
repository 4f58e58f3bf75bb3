//! Kernel selection: an [`OpRequest`] (name, device, dtypes, optional pinned plugin) resolves
//! to the highest-priority matching provider, ties broken by plugin name then file path. A
//! miss says what IS registered under that name, or which registered names are closest.

use super::{dtype_list, Provider, Registry};
use rtllm_plugin_api::{DType, DeviceKind};

/// What a graph node needs: an op on a device for some dtypes, maybe from a pinned plugin.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpRequest {
    pub name: String,
    pub device: DeviceKind,
    /// Every dtype here must be in the provider's dtypes.
    pub dtypes: Vec<DType>,
    /// Only this plugin may serve the request.
    pub pin: Option<String>,
}

impl OpRequest {
    pub fn new(name: impl Into<String>, device: DeviceKind, dtypes: impl IntoIterator<Item = DType>) -> Self {
        let mut dtypes: Vec<DType> = dtypes.into_iter().collect();
        dtypes.sort();
        dtypes.dedup();
        OpRequest { name: name.into(), device, dtypes, pin: None }
    }

    /// Builder: only `plugin` may serve the request.
    pub fn pinned(mut self, plugin: impl Into<String>) -> Self {
        self.pin = Some(plugin.into());
        self
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    #[error("no plugin provides op '{name}'{}", suggest(suggestions))]
    UnknownOp { name: String, suggestions: Vec<String> },
    #[error(
        "no provider of op '{name}' handles device {device} with dtypes [{}]{}; registered providers: {}",
        dtype_list(dtypes),
        pin.as_ref().map(|p| format!(" in pinned plugin '{p}'")).unwrap_or_default(),
        available.join("; ")
    )]
    NoMatch { name: String, device: DeviceKind, dtypes: Vec<DType>, pin: Option<String>, available: Vec<String> },
    #[error("op '{name}' is pinned to plugin '{plugin}', which does not provide it; providers: {}", available.join("; "))]
    PinnedPluginMissing { name: String, plugin: String, available: Vec<String> },
}

fn suggest(names: &[String]) -> String {
    if names.is_empty() {
        "; no ops are registered (are the plugin dylibs built and on RTLLM_PLUGIN_PATH?)".to_string()
    } else {
        format!("; closest registered ops: {}", names.join(", "))
    }
}

/// The most names a miss suggests.
const MAX_SUGGESTIONS: usize = 5;

impl Registry {
    /// The provider that serves `req`: pinned plugin (request pin, else config pin) if any,
    /// then highest priority, ties by plugin name then path.
    pub fn resolve(&self, req: &OpRequest) -> Result<&Provider, ResolveError> {
        let all = self.providers(&req.name);
        if all.is_empty() {
            return Err(ResolveError::UnknownOp { name: req.name.clone(), suggestions: self.closest_names(&req.name) });
        }
        let available = || all.iter().map(Provider::describe).collect::<Vec<_>>();
        let pin = req.pin.clone().or_else(|| self.pins.get(&req.name).cloned());
        if let Some(plugin) = &pin {
            if !all.iter().any(|p| &p.plugin == plugin) {
                return Err(ResolveError::PinnedPluginMissing {
                    name: req.name.clone(),
                    plugin: plugin.clone(),
                    available: available(),
                });
            }
        }
        // `all` is sorted best first, so the first match wins.
        let chosen = all
            .iter()
            .filter(|p| pin.as_ref().is_none_or(|pin| &p.plugin == pin))
            .find(|p| p.supports(req.device, &req.dtypes))
            .ok_or_else(|| ResolveError::NoMatch {
                name: req.name.clone(),
                device: req.device,
                dtypes: req.dtypes.clone(),
                pin: pin.clone(),
                available: available(),
            })?;
        tracing::debug!(
            "op '{}' on {} [{}]: chose {} from {}{}",
            req.name,
            req.device,
            dtype_list(&req.dtypes),
            chosen.describe(),
            chosen.path.display(),
            if pin.is_some() { " (pinned)" } else { "" }
        );
        Ok(chosen)
    }

    /// Registered op names closest to `name` by edit distance (best first).
    pub fn closest_names(&self, name: &str) -> Vec<String> {
        let mut scored: Vec<(usize, &str)> = self.ops.keys().map(|k| (edit_distance(name, k), k.as_str())).collect();
        scored.sort();
        // Prefer plausible typos; if nothing is close, still list the nearest few.
        let limit = (name.chars().count() / 2).max(2);
        let close: Vec<String> =
            scored.iter().filter(|(d, _)| *d <= limit).take(MAX_SUGGESTIONS).map(|(_, n)| n.to_string()).collect();
        if close.is_empty() {
            scored.iter().take(MAX_SUGGESTIONS).map(|(_, n)| n.to_string()).collect()
        } else {
            close
        }
    }
}

/// Levenshtein distance over chars.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, ca) in a.chars().enumerate() {
        cur[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distances() {
        assert_eq!(edit_distance("rmsnorm", "rmsnorm"), 0);
        assert_eq!(edit_distance("rmsnrom", "rmsnorm"), 2);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }

    #[test]
    fn empty_registry_misses_clearly() {
        let r = Registry::empty();
        let err = r.resolve(&OpRequest::new("matmul", DeviceKind::Cpu, [DType::F32])).unwrap_err();
        assert!(err.to_string().contains("no plugin provides op 'matmul'"), "{err}");
        assert!(err.to_string().contains("no ops are registered"), "{err}");
    }
}
