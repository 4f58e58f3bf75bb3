//! Unit tests of the TOML model format: load-time errors name file, line and key; the
//! executor's conditions, optional inputs, blocks and loop threading, on a recording builder.

use super::TomlModel;
use crate::arch::BuildOptions;
use crate::builder::{BuildError, GraphBuilder, Value};
use crate::config::ModelConfig;
use rtllm_plugin_api::{Attrs, DType, TensorMeta};

const LLAMA: &str = include_str!("../../configs/llama.toml");

/// A builder that records op calls; ops named `fused*` give two outputs.
#[derive(Default)]
struct Recorder {
    weights: Vec<String>,
    ops: Vec<String>,
    calls: Vec<String>,
    inputs: Vec<String>,
    metas: Vec<TensorMeta>,
    scope: String,
}

impl Recorder {
    fn push(&mut self, meta: TensorMeta) -> Value {
        self.metas.push(meta);
        Value(self.metas.len() - 1)
    }
}

impl GraphBuilder for Recorder {
    fn input(&mut self, name: &str, meta: TensorMeta) -> Result<Value, BuildError> {
        self.inputs.push(format!("{name}: {meta}"));
        Ok(self.push(meta))
    }
    fn weight(&mut self, name: &str) -> Result<Value, BuildError> {
        if !self.has_weight(name) {
            return Err(BuildError::MissingWeight {
                scope: self.scope.clone(),
                name: name.into(),
                hint: String::new(),
            });
        }
        Ok(self.push(TensorMeta::of(DType::F32, &[4, 4])))
    }
    fn has_weight(&self, name: &str) -> bool {
        self.weights.iter().any(|w| w == name)
    }
    fn op(&mut self, op: &str, inputs: &[Value], attrs: Attrs) -> Result<Vec<Value>, BuildError> {
        if !self.has_op(op) {
            return Err(BuildError::UnknownOp { scope: self.scope.clone(), op: op.into(), hint: String::new() });
        }
        let ins: Vec<String> = inputs.iter().map(|v| v.to_string()).collect();
        self.calls.push(format!("{}: {op}({}) [{attrs}]", self.scope, ins.join(", ")));
        let n = if op.starts_with("fused") { 2 } else { 1 };
        Ok((0..n).map(|_| self.push(TensorMeta::of(DType::F32, &[4]))).collect())
    }
    fn has_op(&self, op: &str) -> bool {
        self.ops.iter().any(|o| o == op)
    }
    fn meta(&self, value: Value) -> TensorMeta {
        self.metas[value.0].clone()
    }
    fn output(&mut self, name: &str, value: Value) -> Result<(), BuildError> {
        self.calls.push(format!("output {name} = {value}"));
        Ok(())
    }
    fn set_scope(&mut self, scope: &str) {
        self.scope = scope.to_string();
    }
}

fn config(layers: usize, tied: bool, bias: bool) -> ModelConfig {
    let json = format!(
        r#"{{"architectures":["LlamaForCausalLM"],"vocab_size":32,"hidden_size":16,"intermediate_size":32,
        "num_hidden_layers":{layers},"num_attention_heads":4,"num_key_value_heads":2,"rms_norm_eps":1e-5,
        "rope_theta":10000.0,"max_position_embeddings":64,"tie_word_embeddings":{tied},"attention_bias":{bias}}}"#
    );
    ModelConfig::from_hf_json(&json).expect("test config parses")
}

fn llama_weights(layers: usize, lm_head: bool, bias: bool) -> Vec<String> {
    let mut w = vec!["model.embed_tokens.weight".to_string(), "model.norm.weight".into()];
    if lm_head {
        w.push("lm_head.weight".into());
    }
    for l in 0..layers {
        for n in ["input_layernorm", "post_attention_layernorm"] {
            w.push(format!("model.layers.{l}.{n}.weight"));
        }
        for p in [
            "self_attn.q_proj",
            "self_attn.k_proj",
            "self_attn.v_proj",
            "self_attn.o_proj",
            "mlp.gate_proj",
            "mlp.up_proj",
            "mlp.down_proj",
        ] {
            w.push(format!("model.layers.{l}.{p}.weight"));
        }
        if bias {
            for p in ["q_proj", "k_proj", "v_proj"] {
                w.push(format!("model.layers.{l}.self_attn.{p}.bias"));
            }
        }
    }
    w
}

const OPS: [&str; 8] = ["embedding", "rmsnorm", "add", "matmul", "rope", "paged_attention", "silu_mul", "gather_rows"];

fn record(text: &str, cfg: &ModelConfig, weights: Vec<String>, extra_ops: &[&str]) -> Result<Recorder, BuildError> {
    let model = TomlModel::from_str(text, "test.toml").unwrap_or_else(|e| panic!("{e}"));
    let mut ops: Vec<String> = OPS.iter().map(|s| s.to_string()).collect();
    ops.extend(extra_ops.iter().map(|s| s.to_string()));
    let mut r = Recorder { weights, ops, ..Default::default() };
    model.build(cfg, &BuildOptions::default(), &mut r)?;
    Ok(r)
}

fn count(r: &Recorder, op: &str) -> usize {
    r.calls.iter().filter(|c| c.contains(&format!(": {op}("))).count()
}

#[test]
fn llama_unfused_threads_the_residual_across_layers() {
    let r = record(LLAMA, &config(2, false, false), llama_weights(2, true, false), &[]).unwrap();
    // 2 layers x 2 norms + final: the first has nothing to add, the 4 others add.
    assert_eq!(count(&r, "rmsnorm"), 5);
    assert_eq!(count(&r, "add"), 4);
    assert_eq!(count(&r, "rope"), 4);
    assert_eq!(count(&r, "paged_attention"), 2);
    assert!(r.calls[0].starts_with("embedding: embedding("), "{:?}", r.calls);
    assert!(r
        .calls
        .iter()
        .any(|c| c.starts_with("layer 1: paged_attention") && c.contains("num_heads=4") && c.contains("scale=0.5")));
    assert!(r.calls.iter().any(|c| c.starts_with("layer 0: rope")
        && c.contains("theta=10000")
        && c.contains("style=\"neox\"")
        && !c.contains("scaling")));
    // Step inputs first, in file order, then each layer's caches as they are read.
    assert!(r.inputs[0].starts_with("input_ids: "));
    assert_eq!(r.inputs.iter().filter(|i| i.starts_with("kv_cache.1.")).count(), 2);
    assert!(r
        .inputs
        .iter()
        .any(|i| i.starts_with("kv_cache.0.k") && i.contains("NB") && i.contains("2") && i.contains("4")));
    assert!(r.calls.last().unwrap().starts_with("output logits"));
}

#[test]
fn llama_writes_the_plain_graph_with_bias_and_tied_head() {
    // Fused ops registered or not, the file writes add + rmsnorm (fusion is the engine's pass).
    let r = record(LLAMA, &config(2, true, true), llama_weights(2, false, true), &["fused_add_rmsnorm"]).unwrap();
    assert_eq!(count(&r, "fused_add_rmsnorm"), 0);
    assert_eq!(count(&r, "add"), 4);
    // q/k/v with bias (3 inputs), o/gate/up/down without; the head reads the embedding table.
    let three = r.calls.iter().filter(|c| c.contains(": matmul(") && c.matches(',').count() == 2).count();
    assert_eq!(three, 6);
}

#[test]
fn if_op_registered_picks_a_branch_by_the_registry() {
    let text = r#"
[model]
name = "branch"
[inputs]
x = { dtype = "f32", dims = ["T"] }
[[graph]]
if_op_registered = "gelu"
op = "gelu"
inputs = ["x"]
outputs = ["y"]

  [[graph.else]]
  op = "silu"
  inputs = ["x"]
  outputs = ["y"]
[outputs]
logits = "y"
"#;
    let model = TomlModel::from_str(text, "branch.toml").unwrap_or_else(|e| panic!("{e}"));
    for (ops, want) in [(vec!["gelu", "silu"], "gelu"), (vec!["silu"], "silu")] {
        let mut r = Recorder { ops: ops.iter().map(|s| s.to_string()).collect(), ..Default::default() };
        model.build(&config(1, false, false), &BuildOptions::default(), &mut r).unwrap();
        assert_eq!(count(&r, want), 1, "{ops:?}: {:?}", r.calls);
        assert_eq!(r.calls.len(), 2, "one op and the output: {:?}", r.calls);
    }
}

#[test]
fn untied_model_without_lm_head_falls_back_to_the_embedding() {
    let r = record(LLAMA, &config(1, false, false), llama_weights(1, false, false), &[]).unwrap();
    assert_eq!(count(&r, "matmul"), 8);
}

fn load_err(text: &str) -> String {
    TomlModel::from_str(text, "bad.toml").expect_err("must fail").to_string()
}

#[test]
fn load_errors_name_file_line_and_key() {
    let e = load_err("[model]\nname = \"x\"\n[[graph]]\nop = \"add\"\ninputs = [\"a\"]\noutputs = [\"b\"]\n[outputs]\nlogits = \"b\"\n");
    assert!(e.starts_with("bad.toml:5: `graph[0].inputs[0]`: unknown value 'a'"), "{e}");

    let e = load_err("[model]\nname = \"x\"\n[[graph]]\nop = \"add\"\ninput = [\"a\"]\n");
    assert!(e.starts_with("bad.toml:5: ") && e.contains("unknown field `input`"), "{e}");

    let e = load_err("[model]\nname = \"x\"\n[values]\ns = \"1.0 / sqrt(config.head_dim\"\n");
    assert!(e.starts_with("bad.toml:4: `values.s`: in expression") && e.contains("missing ')'"), "{e}");

    let e = load_err("[model]\nname = \"x\"\n[inputs]\nids = { dtype = \"int32\", dims = [\"T\"] }\n");
    assert!(e.starts_with("bad.toml:4: `inputs.ids.dtype`: unknown dtype 'int32'"), "{e}");

    let e = load_err("[model]\nname = \"x\"\n[[graph]]\nop = \"add\"\nset = \"y\"\n");
    assert!(e.contains("a step does one thing"), "{e}");

    let e = load_err("[model]\nname = \"x\"\n[inputs]\nids = { dtype = \"i32\", dims = [\"T\"] }\n[[graph]]\nop = \"rope\"\ninputs = [\"ids\"]\noutputs = [\"y\"]\nattrs = { style = \"neox\" }\n[outputs]\ny = \"y\"\n");
    assert!(e.starts_with("bad.toml:9: `graph[0].attrs.style`: unknown name 'neox'"), "{e}");

    let e = load_err("[model]\nname = \"x\"\n[[graph]]\ncall = \"add_nrom\"\ninputs = []\noutputs = [\"y\"]\n[blocks.add_norm]\nparams = []\nresults = []\nbody = []\n[outputs]\ny = \"y\"\n");
    assert!(e.contains("bad.toml:4: `graph[0].call`: unknown block 'add_nrom' (did you mean: add_norm)"), "{e}");

    let e = load_err("[model\nname = 1\n");
    assert!(e.starts_with("bad.toml:1: "), "{e}");
}

#[test]
fn build_errors_name_file_line_and_key() {
    let bad = LLAMA.replace("\"config.num_attention_heads\"", "\"config.num_attention_head\"");
    let line = bad.lines().position(|l| l.contains("config.num_attention_head\"")).unwrap() + 1;
    let e =
        record(&bad, &config(1, false, false), llama_weights(1, true, false), &[]).err().expect("fails").to_string();
    assert!(e.starts_with(&format!("test.toml:{line}: `graph[1].body[6].attrs.num_heads`: layer 0: ")), "{e}");
    assert!(
        e.contains("unknown config reference 'config.num_attention_head' (did you mean: num_attention_heads"),
        "{e}"
    );

    let e = record(LLAMA, &config(1, false, false), llama_weights(1, true, false)[1..].to_vec(), &[])
        .err()
        .expect("fails")
        .to_string();
    assert!(e.contains("`graph[0].inputs[1]`: embedding: missing weight 'model.embed_tokens.weight'"), "{e}");
    assert!(e.contains("`weights.embed` is declared at line"), "{e}");
}

/// Issue 20 item 7: files that would have overflowed the stack are refused with a message.
#[test]
fn recursion_and_deep_nesting_are_refused() {
    // A block that calls itself (through another), anywhere in the file, even if never called.
    let blocks = "[blocks.a]\nparams = [\"x\"]\nresults = [\"y\"]\n[[blocks.a.body]]\ncall = \"b\"\ninputs = [\"x\"]\noutputs = [\"y\"]\n\
                  [blocks.b]\nparams = [\"x\"]\nresults = [\"y\"]\n[[blocks.b.body]]\ncall = \"a\"\ninputs = [\"x\"]\noutputs = [\"y\"]\n";
    let e = load_err(&format!("[model]\nname = \"x\"\n[inputs]\nids = {{ dtype = \"i32\", dims = [\"T\"] }}\n{blocks}[outputs]\ny = \"ids\"\n"));
    assert!(e.contains("block 'a' calls itself (a -> b -> a); blocks may not recurse"), "{e}");

    // A chain of distinct blocks deeper than the limit.
    let mut chain = String::new();
    for i in 0..40 {
        chain += &format!("[blocks.b{i}]\nparams = [\"x\"]\nresults = [\"x\"]\n[[blocks.b{i}.body]]\ncall = \"b{}\"\ninputs = [\"x\"]\noutputs = [\"x\"]\n", i + 1);
    }
    chain += "[blocks.b40]\nparams = [\"x\"]\nresults = [\"x\"]\nbody = []\n";
    let e = load_err(&format!(
        "[model]\nname = \"x\"\n[inputs]\nids = {{ dtype = \"i32\", dims = [\"T\"] }}\n{chain}[outputs]\ny = \"ids\"\n"
    ));
    assert!(e.contains("block calls nest more than 32 deep (b0 -> b1 ->"), "{e}");

    // Expressions: 20k nested parentheses, a 20k-term chain, 20k unary minuses.
    let value = |expr: String| {
        format!("[model]\nname = \"x\"\n[values]\nv = \"{expr}\"\n[inputs]\nids = {{ dtype = \"i32\", dims = [\"T\"] }}\n[outputs]\ny = \"ids\"\n")
    };
    for expr in [
        "(".repeat(20_000) + "1" + &")".repeat(20_000),
        "1".to_string() + &"+1".repeat(20_000),
        "-".repeat(20_000) + "1",
    ] {
        let e = load_err(&value(expr));
        assert!(e.starts_with("bad.toml:4: `values.v`") && e.contains("nested more than 64 levels deep"), "{e}");
    }
    // Within the limits, expressions still work.
    TomlModel::from_str(&value("(".repeat(30) + "1" + &")".repeat(30)), "ok.toml").expect("30 levels parse");
}

#[test]
fn value_chains_deeper_than_the_limit_are_refused_at_build() {
    // Evaluated in name order: v00 first, which names v01, which names v02, ...
    let mut values = String::from("v99 = \"1\"\n");
    for i in 0..99 {
        values += &format!("v{i:02} = \"v{:02} + 1\"\n", i + 1);
    }
    let text = format!("[model]\nname = \"x\"\n[values]\n{values}[inputs]\nids = {{ dtype = \"i32\", dims = [\"T\"] }}\n[outputs]\ny = \"ids\"\n");
    let e = record(&text, &config(1, false, false), Vec::new(), &[]).err().expect("fails").to_string();
    assert!(e.contains("[values] entries name each other more than 64 deep"), "{e}");

    // Nested loops of a billion iterations each end with an error, not after hours.
    let loops = "[[graph]]\nrepeat = \"1000000000\"\n  [[graph.body]]\n  repeat = \"1000000000\"\n  body = []\n";
    let text = format!(
        "[model]\nname = \"x\"\n[inputs]\nids = {{ dtype = \"i32\", dims = [\"T\"] }}\n{loops}[outputs]\ny = \"ids\"\n"
    );
    let e = record(&text, &config(1, false, false), Vec::new(), &[]).err().expect("fails").to_string();
    assert!(e.contains("the model runs more than 1048576 steps"), "{e}");
}
