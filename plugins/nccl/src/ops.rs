//! The op declarations both providers share: one macro that declares `all_reduce`,
//! `all_gather` and `reduce_scatter` for a device and a kernel type, with inference, dtypes and
//! examples from `rtllm_plugin_api::shapes::collective`.

/// Declares the three collective ops for `$device` with kernel `$kernel`, which must have
/// `fn new(kind: Collective, inputs: &[TensorMeta], attrs: &Attrs) -> Result<Self, PluginError>`.
macro_rules! collective_ops {
    ($device:expr, $kernel:ty, $($name:ident = $kind:ident: $summary:literal;)*) => {
        $(
            pub struct $name;

            impl rtllm_plugin_api::Op for $name {
                const NAME: &'static str = rtllm_plugin_api::shapes::collective::Collective::$kind.name();
                const DEVICE: rtllm_plugin_api::DeviceKind = $device;
                const SUMMARY: &'static str = $summary;
                type Kernel = $kernel;

                fn dtypes() -> Vec<rtllm_plugin_api::DType> {
                    rtllm_plugin_api::shapes::collective::DTYPES.to_vec()
                }

                fn infer(
                    inputs: &[rtllm_plugin_api::TensorMeta],
                    attrs: &rtllm_plugin_api::Attrs,
                ) -> Result<Vec<rtllm_plugin_api::TensorMeta>, rtllm_plugin_api::PluginError> {
                    rtllm_plugin_api::shapes::collective::infer(
                        rtllm_plugin_api::shapes::collective::Collective::$kind,
                        inputs,
                        attrs,
                    )
                }

                fn create(
                    inputs: &[rtllm_plugin_api::TensorMeta],
                    attrs: &rtllm_plugin_api::Attrs,
                ) -> Result<$kernel, rtllm_plugin_api::PluginError> {
                    <$kernel>::new(rtllm_plugin_api::shapes::collective::Collective::$kind, inputs, attrs)
                }

                fn examples() -> Vec<rtllm_plugin_api::OpExample> {
                    rtllm_plugin_api::shapes::collective::examples(
                        rtllm_plugin_api::shapes::collective::Collective::$kind,
                    )
                }
            }
        )*
    };
}

pub(crate) use collective_ops;
