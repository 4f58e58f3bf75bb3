//! Compiles kernel sources of kernels/cuda for sm_90 with NVRTC, exactly as the plugin does, and
//! writes the cubins, so register and shared-memory use can be read without a GPU:
//! `cubin_dump <out dir> <file.cu>...` then `cuobjdump --dump-resource-usage <out dir>/<file>.cubin`.
//! Needs libnvrtc on LD_LIBRARY_PATH (scripts/test.sh installs it under target/nvrtc).

use rtllm_cuda::runtime::{compile, KernelSource};
use std::error::Error;
use std::path::Path;

fn main() -> Result<(), Box<dyn Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((out, files)) = args.split_first().filter(|(_, f)| !f.is_empty()) else {
        return Err("usage: cubin_dump <out dir> <file.cu>...".into());
    };
    std::fs::create_dir_all(out)?;
    for file in files {
        let path = Path::new(file);
        let name: &'static str = Box::leak(
            path.file_name().and_then(|n| n.to_str()).ok_or("a UTF-8 file name")?.to_string().into_boxed_str(),
        );
        let text: &'static str = Box::leak(std::fs::read_to_string(path)?.into_boxed_str());
        let cubin = compile(&KernelSource { name, text }, "sm_90")?;
        let dest = Path::new(out).join(name.replace(".cu", ".cubin"));
        std::fs::write(&dest, cubin)?;
        println!("{}", dest.display());
    }
    Ok(())
}
