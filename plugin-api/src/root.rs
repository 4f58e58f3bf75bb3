//! The root module every plugin dylib exports, checked for layout and version at load.

use crate::{error::PluginError, op::OpDecl};
use abi_stable::{
    declare_root_module_statics,
    library::RootModule,
    package_version_strings,
    sabi_types::VersionStrings,
    std_types::{RResult, RString, RVec},
    StableAbi,
};

/// The ABI version plugins are built against (this crate's version); abi_stable refuses a
/// plugin whose version is incompatible (for 0.x: a different minor) or whose layout differs.
pub const PLUGIN_ABI_VERSION: &str = env!("CARGO_PKG_VERSION");

#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = PluginModRef)))]
#[sabi(missing_field(panic))]
pub struct PluginMod {
    /// The plugin's name, e.g. `rtllm-gemm`.
    pub name: extern "C" fn() -> RString,
    /// The plugin's own version (not the ABI's).
    pub version: extern "C" fn() -> RString,
    /// Every op the plugin provides.
    #[sabi(last_prefix_field)]
    pub ops: extern "C" fn() -> RResult<RVec<OpDecl>, PluginError>,
}

impl RootModule for PluginModRef {
    declare_root_module_statics! {PluginModRef}
    const BASE_NAME: &'static str = "rtllm_plugin";
    const NAME: &'static str = "rtllm_plugin";
    const VERSION_STRINGS: VersionStrings = package_version_strings!();
}

/// Exports the plugin's root module. Call once per plugin crate (a `cdylib`):
/// `rtllm_plugin_api::export_plugin!(name: "my-plugin", version: env!("CARGO_PKG_VERSION"));`
///
/// A plugin whose ops all run on some devices may say so, e.g. `devices: ["cuda"]` after the
/// version: the names are written into the file as `rtllm-plugin-devices:cuda,;` (a static the
/// host finds by reading the file, without opening it as a library), so a host running on
/// another device skips the plugin without loading it. Without the clause the plugin loads
/// for every device.
#[macro_export]
macro_rules! export_plugin {
    (name: $name:expr, version: $version:expr, devices: [$($device:literal),+ $(,)?] $(,)?) => {
        $crate::export_plugin!(name: $name, version: $version);
        const _: () = {
            #[used]
            #[export_name = "rtllm_plugin_devices"]
            pub static RTLLM_PLUGIN_DEVICES: &[u8] =
                concat!("rtllm-plugin-devices:", $($device, ",",)+ ";").as_bytes();
        };
    };
    (name: $name:expr, version: $version:expr $(,)?) => {
        const _: () = {
            use $crate::abi_stable::{
                library::{LibHeader, RootModule},
                prefix_type::PrefixTypeTrait,
                std_types::{RResult, RString, RVec},
            };

            extern "C" fn plugin_name() -> RString {
                RString::from($name)
            }
            extern "C" fn plugin_version() -> RString {
                RString::from($version)
            }
            extern "C" fn plugin_ops() -> RResult<RVec<$crate::OpDecl>, $crate::PluginError> {
                $crate::author::collect_ops().into()
            }

            fn root_module() -> $crate::PluginModRef {
                $crate::PluginMod { name: plugin_name, version: plugin_version, ops: plugin_ops }.leak_into_prefix()
            }

            extern "C" fn erased_root_module() -> $crate::abi_stable::library::RootModuleResult {
                $crate::abi_stable::library::__call_root_module_loader(root_module)
            }

            #[export_name = "_1as_0lib_1header_0root_bmodule_bloader"]
            pub static LIB_HEADER: LibHeader = unsafe {
                LibHeader::from_constructor::<$crate::PluginModRef>(
                    erased_root_module,
                    $crate::abi_stable::library::CheckTypeLayout::Yes,
                )
            };
        };
    };
}

#[cfg(test)]
mod tests {
    #[test]
    fn loader_symbol_name_is_abi_stables() {
        assert_eq!(abi_stable::library::ROOT_MODULE_LOADER_NAME, "_1as_0lib_1header_0root_bmodule_bloader");
    }
}
