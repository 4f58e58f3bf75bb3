//! GGUF files: the parser, the config and tensors the loader takes from them (every tensor's
//! range and size checked; small ones dequantized) and the tokenizer their metadata describes.
#![no_main]

use rtllm::tokenizer::Tokenizer;
use rtllm::weights::{gguf_model, WeightFile};
use std::path::Path;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(model) = gguf_model(WeightFile::from_bytes(Path::new("fuzz.gguf"), data)) else { return };
    for (name, tensor) in model.weights.iter() {
        if tensor.byte_len() <= 1 << 16 {
            let _ = tensor.to_f32(name);
        }
    }
    if let Some(spec) = model.tokenizer {
        if let Ok(tokenizer) = Tokenizer::from_spec(spec) {
            if let Ok(ids) = tokenizer.encode("Hello, world! 12 héllo", true) {
                let _ = tokenizer.decode(&ids, false);
            }
        }
    }
});
