//! Weight names of `TinyGpt2ForCausalLM`: HF GPT-2's module names, with `nn.Linear` layout
//! (`[out, in]`) and separate `q_proj`/`k_proj`/`v_proj` instead of GPT-2's fused, transposed
//! `c_attn` (a converter from a real GPT-2 checkpoint would split and transpose it).

/// Token embeddings `[vocab, hidden]`, also the tied output head.
pub const WTE: &str = "transformer.wte.weight";
/// Learned position embeddings `[max_position_embeddings, hidden]`.
pub const WPE: &str = "transformer.wpe.weight";
/// The final LayerNorm module.
pub const LN_F: &str = "transformer.ln_f";

/// Module `module` of block `layer`, e.g. `transformer.h.0.attn.q_proj`.
pub fn layer(layer: usize, module: &str) -> String {
    format!("transformer.h.{layer}.{module}")
}

/// The linear modules of one block with their `[out, in]` shapes, for hidden size `h` and MLP
/// size `i`.
pub fn linear_shapes(h: usize, i: usize) -> [(&'static str, [usize; 2]); 6] {
    [
        ("attn.q_proj", [h, h]),
        ("attn.k_proj", [h, h]),
        ("attn.v_proj", [h, h]),
        ("attn.out_proj", [h, h]),
        ("mlp.fc_in", [i, h]),
        ("mlp.fc_out", [h, i]),
    ]
}

/// The LayerNorm modules of one block.
pub const LAYER_NORMS: [&str; 2] = ["ln_1", "ln_2"];
