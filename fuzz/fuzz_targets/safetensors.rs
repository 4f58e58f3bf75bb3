//! safetensors files: the header parser (length prefix, JSON header, every entry's dtype,
//! shape and data offsets) and the tensors the loader makes of them.
#![no_main]

use rtllm::weights::safetensors::add_safetensors;
use rtllm::weights::{WeightFile, WeightStore};
use std::path::Path;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let mut store = WeightStore::new();
    if add_safetensors(WeightFile::from_bytes(Path::new("fuzz.safetensors"), data), &mut store).is_ok() {
        for (name, tensor) in store.iter() {
            if tensor.byte_len() <= 1 << 16 {
                let _ = tensor.to_f32(name);
            }
        }
    }
});
