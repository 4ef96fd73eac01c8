//! Hugging Face `config.json` files read as planner models give the same architecture as the
//! presets written from those configs by hand (data/models.toml names each config it came from).
//! The fixtures are the published configs, unrelated fields included.

use anychip_plan::model::resolve;
use std::path::PathBuf;

fn fixture(dir: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/hf_configs").join(dir)
}

#[test]
fn published_configs_read_as_their_presets() {
    let pairs = [
        ("gpt2", "gpt2-124m"),
        ("Meta-Llama-3-8B", "llama3-8b"),
        ("Qwen3-0.6B", "qwen3-0.6b"),
        ("Qwen3-32B", "qwen3-32b"),
        ("Qwen3-30B-A3B", "qwen3-30b-a3b"),
        ("Qwen3-235B-A22B", "qwen3-235b-a22b"),
        ("Qwen2-57B-A14B", "qwen2-57b-a14b"),
        ("Mixtral-8x22B-v0.1", "mixtral-8x22b"),
        ("DeepSeek-V3", "deepseek-v3"),
        ("Kimi-K2-Instruct", "kimi-k2"),
        ("gpt-oss-120b", "gpt-oss-120b"),
        ("gpt-oss-20b", "gpt-oss-20b"),
        ("ERNIE-4.5-21B-A3B-PT", "ernie-4.5-21b-a3b"),
        ("ERNIE-4.5-300B-A47B-PT", "ernie-4.5-300b-a47b"),
        ("Llama-4-Maverick-17B-128E", "llama4-maverick"),
        ("NVIDIA-Nemotron-3-Nano-30B-A3B", "nemotron-3-nano"),
        // THUDM/chatglm2-6b's config.json, as github.com/Lwen1243/ChatGLM2-6B holds it
        // (chatglm2-6b/config.json at 8c952641): the shapes and 32,768 positions of
        // ChatGLM3-6B-Base, which the chatglm3-6b preset was written from.
        ("chatglm2-6b", "chatglm3-6b"),
    ];
    for (dir, preset) in pairs {
        let from_json = resolve(fixture(dir).to_str().unwrap()).unwrap_or_else(|e| panic!("{dir}: {e}"));
        let want = resolve(preset).unwrap();
        assert_eq!(from_json.arch, want.arch, "{dir} against preset {preset}");
        assert_eq!(from_json.name, dir);
    }
}

#[test]
fn a_config_file_path_reads_like_its_directory() {
    let dir = fixture("Qwen3-30B-A3B");
    let by_file = resolve(dir.join("config.json").to_str().unwrap()).unwrap();
    let by_dir = resolve(dir.to_str().unwrap()).unwrap();
    assert_eq!(by_file.arch, by_dir.arch);
    assert_eq!(by_file.name, "Qwen3-30B-A3B");
}

/// `json` written as a checkpoint directory's config.json and read as a model.
fn resolve_json(name: &str, json: &str) -> anyhow::Result<anychip_plan::model::Model> {
    let tmp = tempfile::Builder::new().prefix(&format!("anychip-hf-config-{name}-")).tempdir().unwrap();
    std::fs::write(tmp.path().join("config.json"), json).unwrap();
    resolve(tmp.path().to_str().unwrap())
}

fn error_for(name: &str, json: &str) -> String {
    let e = resolve_json(name, json).unwrap_err();
    let msg = format!("{e:#}");
    assert!(!msg.contains('\n'), "one line: {msg}");
    msg
}

#[test]
fn bad_configs_are_one_line_naming_the_problem() {
    let e = error_for("unknown", r#"{"model_type": "bert", "hidden_size": 768}"#);
    assert!(e.contains("model_type 'bert'") && e.contains("qwen3_moe") && e.contains("TOML model file"), "{e}");
    for t in anychip_plan::hf_config::supported() {
        assert!(e.contains(t), "the error names every supported model_type, {t} too: {e}");
    }
    let e = error_for("missing", r#"{"model_type": "llama", "hidden_size": 4096, "vocab_size": 32000}"#);
    assert!(e.contains("'num_hidden_layers'"), "{e}");
    let e = error_for("json", r#"{"model_type": "llama",,}"#);
    assert!(e.contains("not valid JSON"), "{e}");
    let e = error_for(
        "topk",
        r#"{"model_type": "mixtral", "vocab_size": 32000, "num_hidden_layers": 2, "num_attention_heads": 4,
            "hidden_size": 256, "intermediate_size": 512, "num_local_experts": 4, "num_experts_per_tok": 8}"#,
    );
    assert!(e.contains("experts_per_token 8 exceeds experts 4"), "{e}");
    let sizes = r#""vocab_size": 32000, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 512"#;
    for (bad, shown) in [("-256", "-256"), ("256.5", "256.5"), ("\"256\"", "\"256\"")] {
        let e = error_for("width", &format!(r#"{{"model_type": "llama", {sizes}, "hidden_size": {bad}}}"#));
        assert!(e.contains(&format!("'hidden_size' is {shown}, not the whole non-negative number")), "{e}");
    }
    let e = error_for(
        "ctx",
        &format!(r#"{{"model_type": "llama", {sizes}, "hidden_size": 256, "max_position_embeddings": 0}}"#),
    );
    assert!(e.contains("ctx (the context length) must be positive"), "{e}");
}

#[test]
fn window_layers_come_from_layer_types_or_the_family_pattern() {
    let arch = resolve(fixture("gpt-oss-120b").to_str().unwrap()).unwrap().arch;
    assert_eq!(arch.window, Some((128, 0.5)));
    let arch = resolve(fixture("Qwen2-57B-A14B").to_str().unwrap()).unwrap().arch;
    assert_eq!(arch.window, None, "use_sliding_window false switches the window off");
}

#[test]
fn gemma_ties_its_head_unless_the_file_says_otherwise() {
    // google/gemma-2-9b config.json (shape fields): no tie_word_embeddings key, alternating
    // 4,096-token sliding window.
    let cfg = r#"{"architectures": ["Gemma2ForCausalLM"], "model_type": "gemma2", "vocab_size": 256000,
        "hidden_size": 3584, "intermediate_size": 14336, "num_hidden_layers": 42, "num_attention_heads": 16,
        "num_key_value_heads": 8, "head_dim": 256, "max_position_embeddings": 8192, "sliding_window": 4096,
        "hidden_activation": "gelu_pytorch_tanh", "query_pre_attn_scalar": 256}"#;
    let arch = resolve_json("gemma", cfg).unwrap().arch;
    assert!(arch.tied);
    assert_eq!(arch.window, Some((4096, 0.5)));
    // Gemma 2 9B: 9.24B parameters (model card), the 256k embedding counted once.
    assert!((arch.total_params() / 9.24e9 - 1.0).abs() < 0.02, "{}", arch.total_params());
}

/// Configs of families that have no preset, checked against the sizes their publishers state
/// (total parameters, and active ones per token), which a misread width or expert count misses.
/// Publishers count active parameters two ways: OLMoE, Phi-3.5-MoE, dots.llm1 and Ling with
/// the embedding and the head, GLM-4.5 without either (12.2B here without, 13.4B with).
#[test]
fn configs_without_a_preset_read_as_their_published_sizes() {
    // (fixture, total, active, active counts the embedding and head, publisher's statement)
    let cases = [
        ("GLM-4.5-Air", 106e9, 12e9, false, "zai-org/GLM-4.5-Air model card: 106B total, 12B active"),
        ("Phi-3.5-MoE-instruct", 41.9e9, 6.6e9, true, "microsoft/Phi-3.5-MoE-instruct model card: 41.9B, 6.6B active"),
        ("OLMoE-1B-7B-0924", 6.9e9, 1.3e9, true, "allenai/OLMoE-1B-7B-0924 model card: 6.9B total, 1.3B active"),
        ("dots.llm1.base", 142e9, 14e9, true, "rednote-hilab/dots.llm1.base model card: 142B total, 14B activated"),
        ("Ling-lite-1.5", 16.8e9, 2.75e9, true, "inclusionAI/Ling-lite-1.5 model card: 16.8B total, 2.75B activated"),
    ];
    for (dir, total, active, with_embeddings, said) in cases {
        let arch = resolve(fixture(dir).to_str().unwrap()).unwrap_or_else(|e| panic!("{dir}: {e}")).arch;
        let table = (arch.vocab * arch.d_model) as f64;
        // active_matmul_params holds the head once: add the input table, or take the head out.
        let a = arch.active_matmul_params()
            + if arch.tied {
                0.0
            } else if with_embeddings {
                table
            } else {
                -table
            };
        let t = arch.total_params();
        eprintln!("{dir}: {:.2}B parameters, {:.2}B active ({said})", t / 1e9, a / 1e9);
        assert!((t / total - 1.0).abs() < 0.03, "{dir}: {t:.3e} parameters, {said}");
        assert!((a / active - 1.0).abs() < 0.05, "{dir}: {a:.3e} active, {said}");
    }
}

/// Nemotron's plain squared-ReLU MLP (two matrices, not three) with grouped-query attention and
/// an untied head: the Nemotron-4 4B config (Minitron-4B; the config TensorRT-LLM's tests
/// reproduce, with its `head_dim`) reads as 4.2B parameters, 2.6B outside the embedding and head
/// (Muralidharan et al. 2024, Table 1). Read as a gated MLP it would be 5.1B.
#[test]
fn nemotron_reads_as_a_plain_mlp_with_grouped_query_attention() {
    let arch = resolve(fixture("Nemotron-4-4B").to_str().unwrap()).unwrap().arch;
    assert_eq!((arch.mlp_up, arch.kv_heads, arch.tied), (1, 8, false));
    let tables = 2.0 * (arch.vocab * arch.d_model) as f64;
    let t = arch.total_params();
    assert!((t / 4.2e9 - 1.0).abs() < 0.02, "{t:.3e}");
    assert!(((t - tables) / 2.6e9 - 1.0).abs() < 0.03, "{:.3e} outside the tables", t - tables);
}

/// Families with field names of their own or a plain (GELU/ReLU) MLP, each read as the size its
/// publisher states: the planner's matmul weights plus embedding tables (biases, norms and learned
/// positions left out, under 1% of any of these). A GELU MLP read as gated adds half the MLP
/// again (GPT-NeoX-20B: 27.2B, +32%); a multi-query model read with a key/value head per query
/// head misses too (Falcon-7B: 8.2B, +17%).
///
/// These configs were written from the figures in each model card (the search index held no copy
/// of the published files): shape fields as the cards and config classes give them, the others as
/// the published files carry them.
#[test]
fn other_families_read_as_their_published_sizes() {
    // (fixture, total, active (MoE only), publisher's statement)
    let cases = [
        ("falcon-7b", 7.0e9, None, "tiiuae/falcon-7b model card: 7B parameters (head tied, FalconConfig's default)"),
        ("gpt-neox-20b", 20.554_567_68e9, None, "EleutherAI/gpt-neox-20b model card: 20,554,567,680 parameters"),
        ("gpt-j-6b", 6.053_381_344e9, None, "EleutherAI/gpt-j-6b model card: n_parameters 6,053,381,344"),
        ("opt-6.7b", 6.7e9, None, "Zhang et al. 2022 (OPT), Table 1: 6.7B"),
        ("bloom", 176.247_271_424e9, None, "bigscience/bloom model card: 176,247,271,424 parameters"),
        ("mpt-7b", 6.7e9, None, "mosaicml/mpt-7b model card: n_parameters 6.7B"),
        ("phi-2", 2.78e9, None, "microsoft/phi-2 on the Hub: 2.78B parameters (the card rounds to 2.7B)"),
        ("starcoder2-3b", 3.0e9, None, "bigcode/starcoder2-3b model card: 3B parameters"),
        ("starcoderbase", 15.5e9, None, "bigcode/starcoderbase model card: 15.5B parameters"),
        ("dbrx-base", 132e9, Some(36e9), "databricks/dbrx-base model card: 132B total, 36B active"),
        ("OLMo-7B-hf", 7.0e9, None, "allenai/OLMo-7B-hf model card: 7B"),
        ("c4ai-command-r-v01", 35e9, None, "CohereForAI/c4ai-command-r-v01 model card: 35 billion parameters"),
        ("stablelm-2-1_6b", 1.644_417_024e9, None, "stabilityai/stablelm-2-1_6b model card: 1,644,417,024 parameters"),
        ("internlm2-20b", 20e9, None, "internlm/internlm2-20b model card: 20B"),
    ];
    for (dir, total, active, said) in cases {
        let arch = resolve(fixture(dir).to_str().unwrap()).unwrap_or_else(|e| panic!("{dir}: {e}")).arch;
        let t = arch.total_params();
        eprintln!("{dir}: {:.3}B parameters ({said})", t / 1e9);
        assert!((t / total - 1.0).abs() < 0.02, "{dir}: {t:.4e} parameters, {said}");
        if let Some(active) = active {
            // The publisher counts the input embedding too; active_matmul_params holds the head.
            let a = arch.active_matmul_params() + (arch.vocab * arch.d_model) as f64;
            eprintln!("{dir}: {:.2}B active", a / 1e9);
            assert!((a / active - 1.0).abs() < 0.02, "{dir}: {a:.4e} active, {said}");
        }
    }
}

#[test]
fn plain_mlp_families_keep_their_attention_layout() {
    let arch = |dir: &str| resolve(fixture(dir).to_str().unwrap()).unwrap().arch;
    // (fixture, up projections, key/value heads, head tied, context)
    let cases = [
        ("falcon-7b", 1, 1, true, 2048),
        ("gpt-neox-20b", 1, 64, false, 2048),
        ("gpt-j-6b", 1, 16, false, 2048),
        ("opt-6.7b", 1, 32, true, 2048),
        ("bloom", 1, 112, true, 4096),
        ("mpt-7b", 1, 32, true, 2048),
        ("phi-2", 1, 32, false, 2048),
        ("starcoder2-3b", 1, 2, true, 16384),
        ("starcoderbase", 1, 1, true, 8192),
        ("dbrx-base", 2, 8, false, 32768),
        ("OLMo-7B-hf", 2, 32, false, 2048),
        ("c4ai-command-r-v01", 2, 64, true, 8192),
        ("stablelm-2-1_6b", 2, 32, false, 4096),
        ("internlm2-20b", 2, 8, false, 32768),
    ];
    for (dir, up, kv, tied, ctx) in cases {
        let a = arch(dir);
        assert_eq!((a.mlp_up, a.kv_heads, a.tied, a.max_ctx), (up, kv, tied, ctx), "{dir}");
    }
    assert_eq!(arch("starcoder2-3b").window, Some((4096, 1.0)));
    let moe = arch("dbrx-base").moe.unwrap();
    assert_eq!((moe.experts, moe.top_k, moe.expert_d_ff), (16, 4, 10752));
}

#[test]
fn falcon_new_decoder_architecture_groups_key_value_heads() {
    // tiiuae/falcon-40b config.json (shape fields, from its model card): 60 layers of 8,192, 128
    // query heads in 8 key/value groups.
    let cfg = r#"{"model_type": "falcon", "architectures": ["FalconForCausalLM"], "hidden_size": 8192,
        "num_hidden_layers": 60, "num_attention_heads": 128, "num_kv_heads": 8, "new_decoder_architecture": true,
        "multi_query": true, "parallel_attn": true, "vocab_size": 65024}"#;
    let arch = resolve_json("falcon", cfg).unwrap().arch;
    assert_eq!((arch.kv_heads, arch.mlp_up, arch.d_ff), (8, 1, 4 * 8192));
}

#[test]
fn cohere2_ties_its_head_and_windows_three_layers_in_four() {
    // CohereForAI/c4ai-command-r7b-12-2024 (shape fields, from its model card): no
    // tie_word_embeddings key, a 4,096-token window on three layers of every four.
    let cfg = r#"{"model_type": "cohere2", "architectures": ["Cohere2ForCausalLM"], "vocab_size": 256000,
        "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32, "num_attention_heads": 32,
        "num_key_value_heads": 8, "max_position_embeddings": 8192, "sliding_window": 4096,
        "sliding_window_pattern": 4}"#;
    let arch = resolve_json("cohere2", cfg).unwrap().arch;
    assert!(arch.tied);
    assert_eq!((arch.mlp_up, arch.window), (2, Some((4096, 0.75))));
}

#[test]
fn opt_with_a_projected_embedding_is_refused() {
    // facebook/opt-350m: a 512-wide embedding projected to 1,024-wide blocks.
    let e = error_for(
        "opt350m",
        r#"{"model_type": "opt", "vocab_size": 50272, "hidden_size": 1024, "ffn_dim": 4096,
            "num_hidden_layers": 24, "num_attention_heads": 16, "word_embed_proj_dim": 512}"#,
    );
    assert!(e.contains("word_embed_proj_dim 512") && e.contains("TOML model file"), "{e}");
}

#[test]
fn a_nemotron_h_layer_list_reads_as_its_pattern() {
    // Later NemotronHConfig files list the layers by name instead of the pattern string.
    let dir = fixture("NVIDIA-Nemotron-3-Nano-30B-A3B");
    let text = std::fs::read_to_string(dir.join("config.json")).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let pattern = v["hybrid_override_pattern"].as_str().unwrap().to_string();
    let kinds: Vec<&str> = pattern
        .chars()
        .map(|c| match c {
            'M' => "mamba",
            '*' => "attention",
            '-' => "mlp",
            _ => "moe",
        })
        .collect();
    v.as_object_mut().unwrap().remove("hybrid_override_pattern");
    v["layers_block_type"] = serde_json::json!(kinds);
    let listed = resolve_json("nemotron-listed", &v.to_string()).unwrap();
    assert_eq!(listed.arch, resolve("nemotron-3-nano").unwrap().arch);
    v["layers_block_type"][0] = serde_json::json!("linear_attention");
    let e = error_for("nemotron-unknown-layer", &v.to_string());
    assert!(e.contains("linear_attention"), "{e}");
}

/// transformers' documented GraniteMoeHybrid example config (docs/source/en/model_doc/
/// granitemoehybrid.md): 8 layers, attention at the 4th and 8th, 8 experts top-2.
const GRANITE_EXAMPLE: &str = r#"{
  "model_type": "granitemoehybrid", "hidden_size": 512, "intermediate_size": 1024,
  "layer_types": ["mamba", "mamba", "mamba", "attention", "mamba", "mamba", "mamba", "attention"],
  "mamba_chunk_size": 256, "mamba_d_conv": 4, "mamba_d_head": 128, "mamba_d_state": 128,
  "mamba_expand": 2, "mamba_n_groups": 1, "mamba_n_heads": 8, "max_position_embeddings": 4096,
  "num_attention_heads": 8, "num_experts_per_tok": 2, "num_hidden_layers": 8,
  "num_key_value_heads": 8, "num_local_experts": 8, "shared_intermediate_size": 512,
  "tie_word_embeddings": true, "vocab_size": 49152
}"#;

#[test]
fn a_granite_hybrid_layer_is_its_mixer_then_its_experts() {
    let m = resolve_json("granite-example", GRANITE_EXAMPLE).unwrap().arch;
    let hy = m.hybrid.unwrap();
    assert_eq!((hy.mamba, hy.attention, hy.moe, hy.mlp), (6, 2, 8, 0));
    assert_eq!((hy.mamba_heads, hy.mamba_head_dim, hy.mamba_state, hy.mamba_groups), (8, 128, 128, 1));
    let moe = m.moe.unwrap();
    assert_eq!((moe.experts, moe.top_k, moe.expert_d_ff, moe.shared, moe.shared_d_ff), (8, 2, 1024, 1, 512));
    assert!(m.tied && m.mlp_up == 2 && moe.expert_up == 2, "gated (SwiGLU) MLPs and experts");
    // Without experts the feed-forward block is the shared MLP alone (Granite 4.0's dense hybrids).
    let mut v: serde_json::Value = serde_json::from_str(GRANITE_EXAMPLE).unwrap();
    v["num_local_experts"] = serde_json::json!(0);
    let dense = resolve_json("granite-dense", &v.to_string()).unwrap().arch;
    let hy = dense.hybrid.unwrap();
    assert_eq!((hy.mamba, hy.attention, hy.moe, hy.mlp, dense.d_ff), (6, 2, 0, 8, 512));
    v["layer_types"][0] = serde_json::json!("linear_attention");
    let e = error_for("granite-unknown-layer", &v.to_string());
    assert!(e.contains("linear_attention"), "{e}");
    // Bamba names its attention layers by index, each followed by a dense MLP.
    let bamba = r#"{"model_type": "bamba", "hidden_size": 512, "intermediate_size": 1024,
        "num_hidden_layers": 6, "num_attention_heads": 8, "num_key_value_heads": 8,
        "attn_layer_indices": [2], "mamba_n_heads": 8, "mamba_d_state": 16, "vocab_size": 1000}"#;
    let b = resolve_json("bamba", bamba).unwrap().arch;
    let hy = b.hybrid.unwrap();
    assert_eq!((hy.mamba, hy.attention, hy.mlp, hy.mamba_head_dim, b.d_ff), (5, 1, 6, 128, 1024));
}

#[test]
fn granite_4_h_small_reads_as_its_published_size() {
    // ibm-granite/granite-4.0-h-small config.json's shape fields (40 layers: 36 Mamba-2, 4
    // attention; 72 experts top-10 of 768 with a shared one of 1,536; Mamba-2 heads and groups at
    // the config class's defaults, as the file leaves them); the attention layers' positions do
    // not change the counts. Model card: 32B parameters, 9B active.
    let kinds: Vec<&str> = (0..40).map(|i| if i % 10 == 5 { "attention" } else { "mamba" }).collect();
    let json = serde_json::json!({
        "model_type": "granitemoehybrid", "hidden_size": 4096, "num_hidden_layers": 40,
        "num_attention_heads": 32, "num_key_value_heads": 8, "num_local_experts": 72,
        "num_experts_per_tok": 10, "shared_intermediate_size": 1536, "intermediate_size": 768,
        "mamba_d_state": 128, "mamba_d_conv": 4, "mamba_expand": 2, "tie_word_embeddings": true,
        "vocab_size": 100352, "layer_types": kinds
    });
    let m = resolve_json("granite-4.0-h-small", &json.to_string()).unwrap().arch;
    let (total, active) = (m.total_params(), m.active_matmul_params() + (m.vocab * m.d_model) as f64);
    assert!((total / 32e9 - 1.0).abs() < 0.02, "{total:.3e}");
    assert!((active / 9e9 - 1.0).abs() < 0.03, "{active:.3e}");
}

/// Qwen/Qwen3-Coder-Next config.json's shape fields (qwen3_next: 48 layers, every 4th gated
/// attention, the rest Gated DeltaNet; 512 experts top-10 and a shared one).
const QWEN3_CODER_NEXT: &str = r#"{
  "model_type": "qwen3_next", "hidden_size": 2048, "num_hidden_layers": 48, "vocab_size": 151936,
  "head_dim": 256, "num_attention_heads": 16, "num_key_value_heads": 2, "num_experts": 512,
  "num_experts_per_tok": 10, "moe_intermediate_size": 512, "shared_expert_intermediate_size": 512,
  "linear_num_key_heads": 16, "linear_key_head_dim": 128, "linear_num_value_heads": 32,
  "linear_value_head_dim": 128, "linear_conv_kernel_dim": 4, "full_attention_interval": 4,
  "tie_word_embeddings": false
}"#;

#[test]
fn qwen3_next_reads_as_its_published_size() {
    // The checkpoint's tensors: 79,674,391,296 parameters, 3,874,929,408 once the experts a
    // token does not use are taken out (the safetensors headers, as a public parser's test
    // quotes them). The planner counts matmul weights and embedding tables; the 1.5M it leaves
    // out are norms, convolution taps, decays and the shared expert's gate.
    let m = resolve_json("qwen3-coder-next", QWEN3_CODER_NEXT).unwrap().arch;
    let hy = m.hybrid.unwrap();
    assert_eq!((hy.gdn, hy.attention, hy.moe, hy.mamba), (36, 12, 48, 0));
    assert_eq!(m.kind(), "gdn-hybrid");
    let (total, active) = (m.total_params(), m.active_matmul_params() + (m.vocab * m.d_model) as f64);
    assert!((total / 79_674_391_296.0 - 1.0).abs() < 1e-4, "{total:.6e}");
    assert!((active / 3_874_929_408.0 - 1.0).abs() < 1e-3, "{active:.6e}");
    // Without the attention output gate the queries' projection is half as wide.
    let mut v: serde_json::Value = serde_json::from_str(QWEN3_CODER_NEXT).unwrap();
    v["attn_output_gate"] = serde_json::json!(false);
    let ungated = resolve_json("qwen3-next-ungated", &v.to_string()).unwrap().arch;
    assert_eq!(m.total_params() - ungated.total_params(), 12.0 * 2048.0 * 16.0 * 256.0);
}

#[test]
fn qwen3_5_reads_its_text_config_with_layer_types_and_a_dense_mlp() {
    // Qwen3.5-9B's text_config (Qwen3_5ForConditionalGeneration): 32 layers, three Gated
    // DeltaNet then one attention, a dense MLP of 12,288, one multi-token prediction module.
    let kinds: Vec<&str> = (0..32).map(|i| if i % 4 == 3 { "full_attention" } else { "linear_attention" }).collect();
    let json = serde_json::json!({
        "model_type": "qwen3_5",
        "text_config": {
            "model_type": "qwen3_5_text", "attn_output_gate": true, "head_dim": 256,
            "hidden_size": 4096, "intermediate_size": 12288, "layer_types": kinds,
            "linear_conv_kernel_dim": 4, "linear_key_head_dim": 128, "linear_num_key_heads": 16,
            "linear_num_value_heads": 32, "linear_value_head_dim": 128, "num_attention_heads": 16,
            "num_key_value_heads": 4, "num_hidden_layers": 32, "vocab_size": 248320,
            "mtp_num_hidden_layers": 1, "tie_word_embeddings": false
        }
    });
    let m = resolve_json("qwen3.5-9b", &json.to_string()).unwrap().arch;
    let hy = m.hybrid.unwrap();
    assert_eq!((hy.gdn, hy.attention, hy.mlp, hy.moe), (24, 8, 32, 0));
    assert_eq!((m.d_ff, m.mtp.map(|x| x.depths)), (12288, Some(1)));
    let mut bad = json.clone();
    bad["text_config"]["layer_types"][0] = serde_json::json!("sliding_attention");
    let e = error_for("qwen3.5-bad-layer", &bad.to_string());
    assert!(e.contains("sliding_attention"), "{e}");
}

#[test]
fn minimax_m2_and_qwen3_vl_read_as_their_published_sizes() {
    // MiniMaxAI/MiniMax-M2 config.json's shape fields (mixtral's names: num_local_experts of
    // intermediate_size); MiniMax: 230B total parameters, 10B active. Its MTP modules serve
    // speculative decoding and are not read.
    let m2 = r#"{"model_type": "minimax_m2", "vocab_size": 200064, "hidden_size": 3072,
        "intermediate_size": 1536, "num_hidden_layers": 62, "num_attention_heads": 48,
        "num_key_value_heads": 8, "head_dim": 128, "max_position_embeddings": 196608,
        "num_local_experts": 256, "num_experts_per_tok": 8, "tie_word_embeddings": false}"#;
    let m = resolve_json("minimax-m2", m2).unwrap().arch;
    assert!((m.total_params() / 230e9 - 1.0).abs() < 0.02, "{:.4e}", m.total_params());
    assert!((m.active_matmul_params() / 10e9 - 1.0).abs() < 0.06, "{:.4e}", m.active_matmul_params());
    // Qwen3-VL-30B-A3B's language model is Qwen3-30B-A3B's (its text_config, qwen3_vl_moe_text).
    let vl = serde_json::json!({
        "model_type": "qwen3_vl_moe",
        "text_config": {
            "model_type": "qwen3_vl_moe_text", "hidden_size": 2048, "num_hidden_layers": 48,
            "num_attention_heads": 32, "num_key_value_heads": 4, "head_dim": 128,
            "num_experts": 128, "num_experts_per_tok": 8, "moe_intermediate_size": 768,
            "decoder_sparse_step": 1, "mlp_only_layers": [], "vocab_size": 151936,
            "intermediate_size": 6144, "tie_word_embeddings": false
        }
    });
    let text = resolve_json("qwen3-vl-30b-a3b", &vl.to_string()).unwrap().arch;
    let want = resolve("qwen3-30b-a3b").unwrap().arch;
    assert_eq!(text.total_params(), want.total_params());
    assert_eq!(text.active_matmul_params(), want.active_matmul_params());
}

#[test]
fn falcon_h1_runs_attention_and_a_mamba_mixer_in_every_layer() {
    // tiiuae/Falcon-H1-7B-Base config.json's shape fields; TII: 7.6B parameters.
    let json = r#"{"model_type": "falcon_h1", "hidden_size": 3072, "num_hidden_layers": 44,
        "num_attention_heads": 12, "num_key_value_heads": 2, "head_dim": 128,
        "intermediate_size": 12288, "vocab_size": 130048, "tie_word_embeddings": false,
        "mamba_d_state": 256, "mamba_n_groups": 1, "mamba_n_heads": 24, "mamba_d_head": 128,
        "mamba_d_ssm": 3072, "mamba_expand": 2, "mamba_d_conv": 4, "mamba_chunk_size": 128,
        "max_position_embeddings": 262144}"#;
    let m = resolve_json("falcon-h1-7b", json).unwrap().arch;
    let hy = m.hybrid.unwrap();
    assert_eq!((hy.attention, hy.mamba, hy.mlp, hy.mamba_heads, hy.mamba_head_dim), (44, 44, 44, 24, 128));
    assert!((m.total_params() / 7.6e9 - 1.0).abs() < 0.02, "{:.4e}", m.total_params());
    let bad = json.replace("\"mamba_d_ssm\": 3072", "\"mamba_d_ssm\": 4096");
    let e = error_for("falcon-h1-bad", &bad);
    assert!(e.contains("mamba_d_ssm 4096"), "{e}");
}

/// ChatGLM's remote-code names: `num_layers`, `padded_vocab_size`, `seq_length`, a SwiGLU MLP of
/// `ffn_hidden_size`, heads `kv_channels` wide and `multi_query_group_num` key/value heads.
#[test]
fn chatglm_reads_its_own_field_names() {
    // THUDM/chatglm3-6b's config.json, as github.com/suiyi321851618/chatDemo holds it
    // (model/chatglm3-6b/config.json at 737b3a24): the chat model's 8,192 positions; the preset
    // (from ChatGLM3-6B-Base's config) has 32,768, and otherwise the two agree.
    let chat = resolve(fixture("chatglm3-6b").to_str().unwrap()).unwrap().arch;
    let mut want = resolve("chatglm3-6b").unwrap().arch;
    assert_eq!((want.max_ctx, chat.max_ctx), (32768, 8192));
    want.max_ctx = chat.max_ctx;
    assert_eq!(chat, want);
    assert_eq!((chat.kv_heads, chat.d_ff, chat.mlp_up, chat.tied), (2, 13696, 2, false));
    // THUDM/glm-4-9b's shape fields (its config also carries vocab_size and num_hidden_layers).
    let glm4 = r#"{"model_type": "chatglm", "num_layers": 40, "num_hidden_layers": 40, "hidden_size": 4096,
        "ffn_hidden_size": 13696, "kv_channels": 128, "num_attention_heads": 32, "multi_query_attention": true,
        "multi_query_group_num": 2, "padded_vocab_size": 151552, "vocab_size": 151552, "seq_length": 8192,
        "tie_word_embeddings": false}"#;
    assert_eq!(resolve_json("glm-4-9b", glm4).unwrap().arch, resolve("glm4-9b").unwrap().arch);
    // Without multi_query_attention every head has its own keys and values.
    let mha = glm4.replace("\"multi_query_attention\": true", "\"multi_query_attention\": false");
    assert_eq!(resolve_json("chatglm-mha", &mha).unwrap().arch.kv_heads, 32);
    // ChatGLM-6B (v1) shares the model_type, not the layout.
    let v1 = r#"{"model_type": "chatglm", "num_layers": 28, "hidden_size": 4096, "inner_hidden_size": 16384,
        "num_attention_heads": 32, "vocab_size": 130528, "max_sequence_length": 2048}"#;
    let e = error_for("chatglm-6b", v1);
    assert!(e.contains("ChatGLM-6B") && e.contains("TOML model file"), "{e}");
}

/// Qwen-1's `intermediate_size` is both halves of its SwiGLU MLP (QWenMLP's w1 and w2 are each
/// half as wide); read whole, Qwen-1.8B would be 2.65B parameters.
#[test]
fn qwen_1_halves_its_intermediate_size() {
    // Qwen/Qwen-1_8B's config.json, as github.com/hjw-develop/Qwen holds it (a ModelScope
    // download: Qwen-1_8B/config.json at c2e96957). Qwen: 1.8B parameters; the planner's count,
    // 1.84B, is the embedding and untied head (0.62B) and 24 layers of 50.6M.
    let arch = resolve(fixture("Qwen-1_8B").to_str().unwrap()).unwrap().arch;
    assert_eq!((arch.d_ff, arch.mlp_up, arch.kv_heads, arch.max_ctx, arch.tied), (5504, 2, 16, 8192, false));
    assert!((arch.total_params() / 1.84e9 - 1.0).abs() < 0.01, "{:.4e}", arch.total_params());
    // Qwen/Qwen-7B's shape fields read as the qwen-7b preset: 22,016 / 2 a projection, and the
    // 8,192-token seq_length before its 32,768 max_position_embeddings.
    let qwen7b = r#"{"model_type": "qwen", "hidden_size": 4096, "intermediate_size": 22016, "kv_channels": 128,
        "num_attention_heads": 32, "num_hidden_layers": 32, "max_position_embeddings": 32768, "seq_length": 8192,
        "tie_word_embeddings": false, "vocab_size": 151936}"#;
    assert_eq!(resolve_json("qwen-7b", qwen7b).unwrap().arch, resolve("qwen-7b").unwrap().arch);
}

/// Families read under llama's names with the preset each was written from: Baichuan (every head
/// its own keys and values; the 13B models' length only in model_max_length), InternLM and
/// MiniCPM (tied by its config class when the file does not say).
#[test]
fn llama_named_chinese_families_read_as_their_presets() {
    let cases = [
        (
            "baichuan2-7b",
            r#"{"model_type": "baichuan", "architectures": ["BaichuanForCausalLM"], "hidden_size": 4096,
            "intermediate_size": 11008, "max_position_embeddings": 4096, "model_max_length": 4096,
            "num_attention_heads": 32, "num_hidden_layers": 32, "tie_word_embeddings": false, "vocab_size": 125696}"#,
        ),
        (
            "baichuan-13b",
            r#"{"model_type": "baichuan", "architectures": ["BaichuanForCausalLM"], "hidden_size": 5120,
            "intermediate_size": 13696, "model_max_length": 4096, "num_attention_heads": 40,
            "num_hidden_layers": 40, "tie_word_embeddings": false, "vocab_size": 64000}"#,
        ),
        (
            "internlm-7b",
            r#"{"model_type": "internlm", "architectures": ["InternLMForCausalLM"], "bias": true,
            "hidden_size": 4096, "intermediate_size": 11008, "max_position_embeddings": 2048,
            "num_attention_heads": 32, "num_hidden_layers": 32, "tie_word_embeddings": false, "vocab_size": 103168}"#,
        ),
        (
            "minicpm-2b",
            r#"{"model_type": "minicpm", "architectures": ["MiniCPMForCausalLM"], "hidden_size": 2304,
            "intermediate_size": 5760, "max_position_embeddings": 4096, "num_attention_heads": 36,
            "num_hidden_layers": 40, "num_key_value_heads": 36, "vocab_size": 122753, "scale_emb": 12,
            "dim_model_base": 256, "scale_depth": 1.4}"#,
        ),
    ];
    for (preset, json) in cases {
        assert_eq!(resolve_json(preset, json).unwrap().arch, resolve(preset).unwrap().arch, "{preset}");
    }
}

/// EXAONE 3 names its layers `num_layers` and ties its head by default; DeepSeek-MoE uses
/// DeepSeek-V2's expert fields with plain attention; Arcee's AFM and Apertus have a plain MLP.
#[test]
fn exaone_deepseek_moe_and_plain_mlp_families_read_their_shapes() {
    // LGAI-EXAONE/EXAONE-3.0-7.8B-Instruct's shape fields; LG: 7.8B parameters.
    let exaone = r#"{"model_type": "exaone", "vocab_size": 102400, "hidden_size": 4096, "num_layers": 32,
        "num_attention_heads": 32, "num_key_value_heads": 8, "intermediate_size": 14336,
        "max_position_embeddings": 4096, "tie_word_embeddings": false}"#;
    let m = resolve_json("exaone-3.0-7.8b", exaone).unwrap().arch;
    assert_eq!((m.layers, m.kv_heads, m.mlp_up, m.tied), (32, 8, 2, false));
    assert!((m.total_params() / 7.8e9 - 1.0).abs() < 0.01, "{:.4e}", m.total_params());
    let untold = exaone.replace(", \"tie_word_embeddings\": false", "");
    assert!(resolve_json("exaone-tied", &untold).unwrap().arch.tied, "ExaoneConfig ties by default");
    // deepseek-ai/deepseek-moe-16b-base's shape fields; DeepSeek: 16.4B parameters, 2.8B active.
    let moe = r#"{"model_type": "deepseek", "vocab_size": 102400, "hidden_size": 2048, "intermediate_size": 10944,
        "moe_intermediate_size": 1408, "num_hidden_layers": 28, "num_attention_heads": 16,
        "num_key_value_heads": 16, "n_shared_experts": 2, "n_routed_experts": 64, "num_experts_per_tok": 6,
        "first_k_dense_replace": 1, "moe_layer_freq": 1, "max_position_embeddings": 4096,
        "tie_word_embeddings": false}"#;
    let m = resolve_json("deepseek-moe-16b", moe).unwrap().arch;
    let e = m.moe.unwrap();
    assert_eq!((e.experts, e.top_k, e.shared, e.expert_d_ff, m.d_ff, m.kv_heads), (64, 6, 2, 1408, 10944, 16));
    let active = m.active_matmul_params() + (m.vocab * m.d_model) as f64;
    assert!((m.total_params() / 16.4e9 - 1.0).abs() < 0.01, "{:.4e}", m.total_params());
    assert!((active / 2.8e9 - 1.0).abs() < 0.02, "{active:.4e}");
    for mt in ["arcee", "apertus"] {
        let json = format!(
            r#"{{"model_type": "{mt}", "vocab_size": 1000, "hidden_size": 256, "intermediate_size": 1024,
            "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2}}"#
        );
        let m = resolve_json(mt, &json).unwrap().arch;
        assert_eq!((m.mlp_up, m.d_ff, m.kv_heads, m.tied), (1, 1024, 2, false), "{mt}");
    }
}

/// Hunyuan-A13B: 64 experts of 3,072, 8 a token, one shared MLP of 3,072 in every layer, 32
/// query heads of 128 on 8 key/value heads, the head tied. The fixture is the config.json of
/// Tencent's first release, as github.com/tianyu1412/Hunyuan-A13B holds it (models/config.json at
/// df832ebc; remote code, model_type `hunyuan`, the expert fields one entry a layer); transformers'
/// HunYuanMoEV1Config (`hunyuan_v1_moe`) reads the same fields, checked here on the same file.
/// Tencent: 80B parameters, 13B active (the tied 128k x 4,096 table counted once).
#[test]
fn hunyuan_a13b_reads_as_its_published_size() {
    let dir = fixture("Hunyuan-A13B-Instruct");
    let text = std::fs::read_to_string(dir.join("config.json")).unwrap();
    let remote = resolve(dir.to_str().unwrap()).unwrap().arch;
    let v1 = resolve_json("hunyuan-v1-moe", &text.replace("\"hunyuan\"", "\"hunyuan_v1_moe\"")).unwrap().arch;
    assert_eq!(remote, v1);
    let a = v1;
    assert_eq!(
        (a.layers, a.d_model, a.heads, a.kv_heads, a.qk_dim, a.vocab, a.tied),
        (32, 4096, 32, 8, 32 * 128, 128167, true)
    );
    let moe = a.moe.unwrap();
    assert_eq!(
        (moe.experts, moe.top_k, moe.shared, moe.expert_d_ff, moe.shared_d_ff, moe.expert_up),
        (64, 8, 1, 3072, 3072, 2)
    );
    let (total, active) = (a.total_params(), a.active_matmul_params());
    eprintln!("Hunyuan-A13B: {:.2}B parameters, {:.2}B active", total / 1e9, active / 1e9);
    assert!((total / 80e9 - 1.0).abs() < 0.02, "{total:.4e}");
    assert!((active / 13e9 - 1.0).abs() < 0.05, "{active:.4e}");
    // Experts that differ between layers, and Hunyuan-Large's cross-layer attention, are refused.
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["moe_topk"][5] = serde_json::json!(4);
    let e = error_for("hunyuan-uneven", &v.to_string());
    assert!(e.contains("moe_topk differs between layers") && e.contains("TOML model file"), "{e}");
    let e = error_for("hunyuan-cla", &text.replace("\"use_cla\": false", "\"use_cla\": true"));
    assert!(e.contains("use_cla"), "{e}");
}

/// transformers' GLM-4 (`glm`, GlmConfig: THUDM/glm-4-9b-hf and the other `-hf` conversions) has a
/// SwiGLU MLP (GlmMLP is Phi-3's, gate and up fused in gate_up_proj) of `intermediate_size`; its
/// partial rotary embedding changes no width. These are THUDM/glm-4-9b-hf's shape fields (no copy
/// of the published file was found; GlmConfig's documented defaults are this checkpoint's): the
/// same model as the remote-code `chatglm` file the glm4-9b preset was written from. The Hub counts
/// the checkpoint at 9.4B parameters.
#[test]
fn glm_reads_as_glm4_9b() {
    let cfg = r#"{"architectures": ["GlmForCausalLM"], "model_type": "glm", "attention_bias": true,
        "head_dim": 128, "hidden_act": "silu", "hidden_size": 4096, "intermediate_size": 13696,
        "max_position_embeddings": 8192, "num_attention_heads": 32, "num_hidden_layers": 40,
        "num_key_value_heads": 2, "partial_rotary_factor": 0.5, "rms_norm_eps": 1.5625e-07,
        "rope_theta": 10000.0, "tie_word_embeddings": false, "vocab_size": 151552}"#;
    let a = resolve_json("glm-4-9b-hf", cfg).unwrap().arch;
    assert_eq!(
        (a.layers, a.d_model, a.heads, a.kv_heads, a.qk_dim, a.d_ff, a.mlp_up, a.vocab),
        (40, 4096, 32, 2, 32 * 128, 13696, 2, 151552)
    );
    assert_eq!(a, resolve("glm4-9b").unwrap().arch);
    assert!((a.total_params() / 9.4e9 - 1.0).abs() < 0.01, "{:.4e}", a.total_params());
}

/// InternLM3 (remote-code InternLM3Config, `internlm3`) keeps llama's names: 48 layers of 4,096, 32
/// query heads of 128 on 2 key/value heads, a SwiGLU MLP of 10,240, an untied head. The shape
/// fields of internlm/internlm3-8b-instruct's config.json as a public test quotes them (an MLX
/// port's InternLM3 tests, "realConfigJSON"; the published file adds token ids and dtypes).
/// 8.8B parameters (the Hub's count of the checkpoint; the card rounds to 8B).
#[test]
fn internlm3_reads_its_llama_names() {
    let cfg = r#"{"architectures": ["InternLM3ForCausalLM"], "bias": false, "head_dim": 128,
        "hidden_size": 4096, "intermediate_size": 10240, "max_position_embeddings": 32768,
        "model_type": "internlm3", "num_attention_heads": 32, "num_hidden_layers": 48,
        "num_key_value_heads": 2, "qkv_bias": false, "rms_norm_eps": 0.00001,
        "rope_scaling": {"factor": 6.0, "rope_type": "dynamic"}, "rope_theta": 50000000,
        "tie_word_embeddings": false, "vocab_size": 128512}"#;
    let a = resolve_json("internlm3-8b", cfg).unwrap().arch;
    assert_eq!(
        (a.layers, a.d_model, a.heads, a.kv_heads, a.qk_dim, a.d_ff, a.mlp_up, a.vocab, a.tied),
        (48, 4096, 32, 2, 32 * 128, 10240, 2, 128512, false)
    );
    assert!((a.total_params() / 8.8e9 - 1.0).abs() < 0.01, "{:.4e}", a.total_params());
}

/// EXAONE 4.0 (transformers' Exaone4Config, `exaone4`): llama's names and a SwiGLU MLP; the 32B
/// model windows three layers in four (`sliding_window_pattern` "LLLG", or `layer_types`). The
/// shape fields of LGAI-EXAONE/EXAONE-4.0-32B's config.json as the model card and public tests of
/// it give them (no copy of the published file was found). LG: 30.95B parameters without the
/// embeddings; EXAONE-4.0-1.2B (tied, no window), 1.07B.
#[test]
fn exaone4_reads_its_window_pattern() {
    let cfg = serde_json::json!({
        "architectures": ["Exaone4ForCausalLM"], "model_type": "exaone4", "head_dim": 128,
        "hidden_size": 5120, "intermediate_size": 27392, "max_position_embeddings": 131072,
        "num_attention_heads": 40, "num_hidden_layers": 64, "num_key_value_heads": 8,
        "sliding_window": 4096, "sliding_window_pattern": "LLLG", "tie_word_embeddings": false,
        "vocab_size": 102400
    });
    let a = resolve_json("exaone-4.0-32b", &cfg.to_string()).unwrap().arch;
    assert_eq!(
        (a.layers, a.d_model, a.heads, a.kv_heads, a.qk_dim, a.d_ff, a.mlp_up, a.vocab, a.tied),
        (64, 5120, 40, 8, 40 * 128, 27392, 2, 102400, false)
    );
    assert_eq!(a.window, Some((4096, 0.75)));
    let body = a.total_params() - 2.0 * (a.vocab * a.d_model) as f64;
    assert!((body / 30.95e9 - 1.0).abs() < 0.005, "{body:.4e} without the embeddings");
    // The same layers named in layer_types, an integer pattern, and the class's defaults where the
    // file has no sliding_window; a null one switches the window off.
    let mut listed = cfg.clone();
    listed["layer_types"] = (0..64).map(|i| if i % 4 == 3 { "full_attention" } else { "sliding_attention" }).collect();
    let mut every4 = cfg.clone();
    every4["sliding_window_pattern"] = serde_json::json!(4);
    let mut untold = cfg.clone();
    untold.as_object_mut().unwrap().remove("sliding_window");
    untold.as_object_mut().unwrap().remove("sliding_window_pattern");
    for (name, v) in [("listed", listed), ("every4", every4), ("untold", untold)] {
        assert_eq!(resolve_json(name, &v.to_string()).unwrap().arch.window, Some((4096, 0.75)), "{name}");
    }
    let small = r#"{"model_type": "exaone4", "head_dim": 64, "hidden_size": 2048, "intermediate_size": 4096,
        "num_attention_heads": 32, "num_hidden_layers": 30, "num_key_value_heads": 8, "sliding_window": null,
        "tie_word_embeddings": true, "vocab_size": 102400}"#;
    let s = resolve_json("exaone-4.0-1.2b", small).unwrap().arch;
    assert_eq!((s.window, s.tied, s.kv_heads, s.qk_dim), (None, true, 8, 32 * 64));
    let body = s.total_params() - (s.vocab * s.d_model) as f64;
    assert!((body / 1.07e9 - 1.0).abs() < 0.01, "{body:.4e} without the embeddings");
}

/// Qwen2-VL and Qwen2.5-VL configs of early 2025 keep the language model's fields at the top level
/// (`qwen2_5_vl`, next to a vision_config), later ones in a `text_config` (`qwen2_5_vl_text`); both
/// read as the language model, Qwen2.5-7B's shapes for Qwen2.5-VL-7B (the vision tower is not
/// priced). Shape fields of Qwen/Qwen2.5-VL-7B-Instruct's config.json.
#[test]
fn qwen2_5_vl_reads_its_language_model_top_level_or_nested() {
    let text = serde_json::json!({
        "hidden_size": 3584, "intermediate_size": 18944, "num_hidden_layers": 28,
        "num_attention_heads": 28, "num_key_value_heads": 4, "vocab_size": 152064,
        "max_position_embeddings": 128000, "sliding_window": 32768, "use_sliding_window": false,
        "tie_word_embeddings": false
    });
    let mut top = text.clone();
    top["model_type"] = serde_json::json!("qwen2_5_vl");
    top["vision_config"] = serde_json::json!({"depth": 32, "hidden_size": 1280, "out_hidden_size": 3584});
    let mut inner = text.clone();
    inner["model_type"] = serde_json::json!("qwen2_5_vl_text");
    let nested = serde_json::json!({"model_type": "qwen2_5_vl", "text_config": inner});
    let mut want = resolve("qwen2.5-7b").unwrap().arch;
    for (name, v) in [("top", top), ("nested", nested)] {
        let a = resolve_json(name, &v.to_string()).unwrap().arch;
        want.max_ctx = a.max_ctx;
        assert_eq!(a, want, "{name}");
    }
}

/// Mistral 3 (Mistral-Small-3.1), Gemma 3 and LLaVA wrap their language model in a text_config;
/// Jamba and Mamba are refused by name.
#[test]
fn wrappers_read_their_text_config_and_state_space_models_are_refused() {
    let mistral3 = r#"{"model_type": "mistral3", "text_config": {"model_type": "mistral", "hidden_size": 5120,
        "intermediate_size": 32768, "num_hidden_layers": 40, "num_attention_heads": 32, "num_key_value_heads": 8,
        "head_dim": 128, "vocab_size": 131072, "sliding_window": null}, "vision_config": {"model_type": "pixtral"}}"#;
    let m = resolve_json("mistral-small-3.1", mistral3).unwrap().arch;
    assert_eq!((m.layers, m.d_model, m.kv_heads, m.qk_dim, m.d_ff, m.window), (40, 5120, 8, 32 * 128, 32768, None));
    for mt in ["jamba", "mamba", "falcon_mamba"] {
        let e = error_for(mt, &format!(r#"{{"model_type": "{mt}", "hidden_size": 4096, "num_hidden_layers": 32}}"#));
        assert!(e.contains(&format!("model_type '{mt}' is not one the planner reads")), "{e}");
    }
}

/// Gemma 3's multimodal configs leave fields of their text_config to Gemma3TextConfig's defaults:
/// google/gemma-3-4b-it's gives only the widths, layer count and window (shape fields as its
/// config.json carries them), so the 262,208-token vocabulary, 8 heads of 256 on 4 key/value
/// heads and the window on five layers in six are the class's. Gemma 3 report, Table 1: 4B has
/// 3,209M non-embedding parameters (its 417M vision encoder is not priced).
#[test]
fn gemma3_text_config_takes_the_class_defaults_it_leaves_out() {
    let cfg = r#"{"architectures": ["Gemma3ForConditionalGeneration"], "model_type": "gemma3",
        "text_config": {"hidden_size": 2560, "intermediate_size": 10240, "model_type": "gemma3_text",
        "num_hidden_layers": 34, "rope_scaling": {"factor": 8.0, "rope_type": "linear"}, "sliding_window": 1024},
        "vision_config": {"model_type": "siglip_vision_model", "hidden_size": 1152}}"#;
    let a = resolve_json("gemma-3-4b-it", cfg).unwrap().arch;
    assert_eq!(
        (a.layers, a.d_model, a.heads, a.kv_heads, a.qk_dim, a.d_ff, a.vocab, a.tied),
        (34, 2560, 8, 4, 8 * 256, 10240, 262208, true)
    );
    assert_eq!(a.window, Some((1024, 5.0 / 6.0)));
    let body = a.total_params() - (a.vocab * a.d_model) as f64;
    assert!((body / 3.209e9 - 1.0).abs() < 0.01, "{body:.4e} without the embedding");
}

/// The fixture `dir` as a JSON value, to be edited before it is read.
fn fixture_json(dir: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(fixture(dir).join("config.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// Ling 2.0 (Ant Group's BailingMoeV2: Ling-mini-2.0, Ling-flash-2.0, Ling-1T; Ring-2.0 the
/// same): the fixtures are the config.json that Ant's converter writes for these checkpoints
/// (github.com/inclusionAI/Ling-V2 tools/convert_dcp_to_safetensors.py, `gen_config`: its field
/// names and `model_type` `bailing_moe`, which the Hub's files carry too), filled with the shapes
/// of NVIDIA's Megatron-Bridge providers for the three models
/// (src/megatron/bridge/models/bailing/bailing_moe2_provider.py at 574f5cf9: LingMini2,
/// LingFlash2 and Ling1TModelProvider on BailingMoeV2ModelProvider; Ling-mini-2.0's agree with the
/// defaults of Ant's configuration_bailing_moe_v2.py). Each reads the same as `bailing_moe_v2`,
/// the model_type of Ant's BailingMoeV2Config class, and as its publisher's sizes: total with the
/// embedding and head, active with them too (Ant counts both).
#[test]
fn ling_2_reads_as_bailing_moe_v2_at_its_published_sizes() {
    // (fixture, total, active, tolerance on the total, publisher's statement)
    let cases = [
        (
            "Ling-mini-2.0",
            16.26e9,
            1.43e9,
            0.01,
            "inclusionAI/Ling-V2 README: Ling-mini-2.0 1.43B activated of 16.26B total (non-embedding 789M)",
        ),
        (
            "Ling-flash-2.0",
            100e9,
            6.1e9,
            0.03,
            "inclusionAI/Ling-flash-2.0 model card: 100B total, 6.1B activated (4.8B non-embedding)",
        ),
        ("Ling-1T", 1e12, 50e9, 0.04, "inclusionAI/Ling-1T model card: 1 trillion total, about 50B active a token"),
    ];
    for (dir, total, active, tol, said) in cases {
        let mut v = fixture_json(dir);
        let as_published = resolve_json(&format!("{dir}-bailing_moe"), &v.to_string()).unwrap().arch;
        v["model_type"] = serde_json::json!("bailing_moe_v2");
        let arch = resolve_json(dir, &v.to_string()).unwrap_or_else(|e| panic!("{dir}: {e}")).arch;
        assert_eq!(arch, as_published, "{dir}: bailing_moe_v2 reads as the published bailing_moe");
        let moe = arch.moe.unwrap();
        assert_eq!((moe.experts, moe.top_k, moe.shared, moe.dense_layers), (256, 8, 1, 1), "{dir}");
        assert_eq!(arch.mtp, None, "{dir}: the chat checkpoints carry no MTP layer");
        let (t, a) = (arch.total_params(), arch.active_matmul_params() + (arch.vocab * arch.d_model) as f64);
        eprintln!("{dir}: {:.3}B parameters, {:.3}B active ({said})", t / 1e9, a / 1e9);
        assert!((t / total - 1.0).abs() < tol, "{dir}: {t:.4e} parameters, {said}");
        assert!((a / active - 1.0).abs() < 0.03, "{dir}: {a:.4e} active, {said}");
    }
    // Ling-mini-2.0 without the embedding and head: Ant's 789M activated non-embedding parameters.
    let mini = resolve(fixture("Ling-mini-2.0").to_str().unwrap()).unwrap().arch;
    let body = mini.active_matmul_params() - (mini.vocab * mini.d_model) as f64;
    assert!((body / 789e6 - 1.0).abs() < 0.01, "{body:.4e} non-embedding active");
    // Ling-flash-2.0's checkpoint: 102,889,705,216 parameters (the Hub's safetensors count, as
    // the Hub API's model record quotes it: github.com/daniel-p-green/alain-ai-learning-platform
    // out/research-inclusionai-ling-flash-2-0/sources/huggingface/model.json); the rest of the
    // count is norms and expert biases.
    let flash = resolve(fixture("Ling-flash-2.0").to_str().unwrap()).unwrap().arch;
    assert!((flash.total_params() / 102_889_705_216.0 - 1.0).abs() < 1e-3, "{:.6e}", flash.total_params());
}

/// A Ling 2.0 base checkpoint keeps its multi-token prediction layer (Ant's converter adds
/// `num_nextn_predict_layers: 1` with `--mtp-as-extra-layer`; modeling_bailing_moe_v2.py builds
/// it after the `num_hidden_layers` layers): one MTP depth of a MoE layer and a 2h -> h
/// projection. The Hub lists Ling-flash-base-2.0 at 106B against Ling-flash-2.0's 103B
/// (huggingface.co/collections/inclusionAI/ling-v2), the MTP layer's 3.3B.
#[test]
fn a_ling_2_base_config_reads_its_mtp_layer() {
    let mut v = fixture_json("Ling-flash-2.0");
    v["model_type"] = serde_json::json!("bailing_moe_v2");
    let chat = resolve_json("ling-flash-2.0", &v.to_string()).unwrap().arch;
    v["num_nextn_predict_layers"] = serde_json::json!(1);
    let base = resolve_json("ling-flash-base-2.0", &v.to_string()).unwrap().arch;
    let mtp = base.mtp.expect("num_nextn_predict_layers is one MTP depth");
    assert_eq!((mtp.depths, mtp.modules), (1, 1));
    let extra = base.total_params() - chat.total_params();
    assert_eq!(extra, base.mtp_module_params(base.moe_mlp_params()));
    assert!((base.total_params() / 106e9 - 1.0).abs() < 0.01, "{:.4e}", base.total_params());
    assert_eq!(base.attention_layers(), chat.attention_layers() + 1);
}

/// GLM-4.5V (and GLM-4.6V, the same `glm4v_moe` layout): a vision tower and GLM-4.5-Air's
/// language model in `text_config` (`glm4v_moe_text`). The fixture is GLM-4.5V's config as
/// transformers 5.7.0's Glm4vMoeConfig prints it, with the checkpoint's tensor list and its
/// 107,710,933,120 parameters, in a public model report the code index holds (a GLM-4.5V
/// "模型信息报告", id 62538297598; the Hub is not reachable here). Its language-model matmul
/// weights and tables (embedding, head, attention, the dense layer, 45 MoE layers of 128 experts,
/// routers and shared experts) sum to 106,851,205,120 by that list, which the planner gives
/// exactly; the vision tower (858.7M) is not priced. Zhipu: GLM-4.5-Air, 106B total, 12B active.
#[test]
fn glm4v_moe_reads_its_glm4_moe_text_config() {
    let arch = resolve(fixture("GLM-4.5V").to_str().unwrap()).unwrap().arch;
    let moe = arch.moe.unwrap();
    assert_eq!((arch.layers, arch.d_model, arch.heads, arch.kv_heads, arch.qk_dim), (46, 4096, 96, 8, 96 * 128));
    assert_eq!((moe.experts, moe.top_k, moe.shared, moe.expert_d_ff, moe.dense_layers), (128, 8, 1, 1408, 1));
    assert_eq!(arch.total_params(), 106_851_205_120.0);
    let active = arch.active_matmul_params() - (arch.vocab * arch.d_model) as f64;
    assert!((active / 12e9 - 1.0).abs() < 0.05, "{active:.4e} active without embedding and head");
    // The text_config's model_type names the reader; a text_config without one reads by the wrapper's.
    let mut v = fixture_json("GLM-4.5V");
    v["text_config"].as_object_mut().unwrap().remove("model_type");
    assert_eq!(resolve_json("glm-4.5v-untyped", &v.to_string()).unwrap().arch, arch);
}

/// Xiaomi's MiMo-7B: a Qwen2 decoder with multi-token prediction modules. The fixture is the
/// config.json of github.com/XiaomiMiMo/MiMo (config.json at 43be2d82): 36 layers of 4,096, 32
/// heads of 128 on 8 key/value heads, a SwiGLU MLP of 11,008, two MTP layers (MiMo: "The MTP
/// layers of MiMo-7B is tuned during pretraining and SFT"). Each MTP depth is an attention and
/// an MLP block of those widths plus the 2h -> h input projection (modeling_mimo.py's
/// MiMoMTPLayers), the LM head and loss again.
#[test]
fn mimo_reads_as_qwen2_with_its_mtp_layers() {
    let arch = resolve(fixture("MiMo-7B").to_str().unwrap()).unwrap().arch;
    assert_eq!(
        (arch.layers, arch.d_model, arch.kv_heads, arch.qk_dim, arch.d_ff, arch.mlp_up),
        (36, 4096, 8, 4096, 11008, 2)
    );
    assert_eq!((arch.window, arch.moe, arch.tied), (None, None, false));
    let mtp = arch.mtp.expect("num_nextn_predict_layers 2");
    assert_eq!((mtp.depths, mtp.modules), (2, 2));
    let h = 4096.0;
    let attn = 2.0 * h * h + 2.0 * h * 1024.0;
    let layer = attn + 3.0 * h * 11008.0;
    assert_eq!(arch.attn_params, attn);
    let body = 36.0 * layer + 2.0 * 151680.0 * h;
    assert_eq!(arch.total_params(), body + 2.0 * (layer + 2.0 * h * h));
    // 7.62B without the MTP layers: Xiaomi's "MiMo-7B".
    assert!((body / 7.6e9 - 1.0).abs() < 0.01, "{body:.4e}");
    // The same file as qwen2 has no MTP module; with experts it is not MiMo-7B and is refused.
    let mut v = fixture_json("MiMo-7B");
    v["model_type"] = serde_json::json!("qwen2");
    assert_eq!(resolve_json("mimo-as-qwen2", &v.to_string()).unwrap().arch.total_params(), body);
    v["model_type"] = serde_json::json!("mimo");
    v["n_routed_experts"] = serde_json::json!(64);
    let e = error_for("mimo-moe", &v.to_string());
    assert!(e.contains("n_routed_experts") && e.contains("TOML model file"), "{e}");
}

/// DeepSeek-V3.2 (`deepseek_v32`): DeepSeek-V3's fields and DeepSeek Sparse Attention's
/// `index_n_heads` 64, `index_head_dim` 128 and `index_topk` 2048. The fixture is
/// deepseek-ai/DeepSeek-V3.2's config.json as a public model report the code index holds prints
/// it (a DeepSeek-V3.2 "模型信息报告", id 62736905881, with the checkpoint's tensor list and its
/// 685,396,921,376 parameters; the Hub is not reachable here). The main model's matmul weights
/// and tables by that list (61 layers: the list's layer 61 is the MTP module, which the planner
/// does not read from DeepSeek configs) sum to 671,876,907,008: DeepSeek-V3's 671,025,397,760
/// (DeepSeek: 671B) and 61 indexers of 13,959,168 (`wq_b` 8,192 x 1,536, `wk` 128 x 7,168,
/// `weights_proj` 64 x 7,168). The rest of the checkpoint's count is the MTP module's
/// 13,477,347,328 (its copies of the embedding and head included) and 42,667,040 FP8 block
/// scales, norms and router biases.
#[test]
fn deepseek_v32_reads_as_deepseek_v3_with_its_sparse_attention_indexer() {
    let v3 = resolve(fixture("DeepSeek-V3").to_str().unwrap()).unwrap().arch;
    let v32 = resolve(fixture("DeepSeek-V3.2").to_str().unwrap()).unwrap().arch;
    let d = v32.dsa.expect("the indexer fields");
    assert_eq!((d.heads, d.head_dim, d.topk, d.q_rank), (64, 128, 2048, 1536));
    // The core attends index_topk keys on every layer: a 2,048-token window's FLOPs.
    assert_eq!((v32.window, v3.window, v3.dsa), (Some((2048, 1.0)), None, None));
    let indexer = 8192.0 * 1536.0 + 128.0 * 7168.0 + 64.0 * 7168.0;
    assert_eq!(indexer, 13_959_168.0);
    assert_eq!(v32.attn_params, v3.attn_params + indexer);
    assert_eq!(v3.total_params(), 671_025_397_760.0);
    assert_eq!(v32.total_params(), 671_876_907_008.0);
    let checkpoint = 685_396_921_376.0;
    assert_eq!(checkpoint - v32.total_params(), 13_477_347_328.0 + 42_667_040.0);
    assert_eq!(v32.active_matmul_params(), v3.active_matmul_params() + 61.0 * indexer);
    // Everything else is DeepSeek-V3's: the same file read as deepseek_v3 is V3.
    let mut v = fixture_json("DeepSeek-V3.2");
    v["model_type"] = serde_json::json!("deepseek_v3");
    assert_eq!(resolve_json("deepseek-v3.2-as-v3", &v.to_string()).unwrap().arch, v3);
    // A deepseek_v32 file without an indexer field is refused, naming it; so is a file reusing
    // one layer's top-k in others.
    let mut v = fixture_json("DeepSeek-V3.2");
    v.as_object_mut().unwrap().remove("index_topk");
    let e = error_for("deepseek-v3.2-no-topk", &v.to_string());
    assert!(e.contains("'index_topk'"), "{e}");
    let mut v = fixture_json("DeepSeek-V3.2");
    v["index_topk_freq"] = serde_json::json!(4);
    let e = error_for("deepseek-v3.2-topk-freq", &v.to_string());
    assert!(e.contains("index_topk_freq 4") && e.contains("TOML model file"), "{e}");
}

/// Moonshot's Kimi-Linear-48B-A3B (`kimi_linear`): 27 layers, Kimi Delta Attention on 20 and
/// MLA on 7 (every fourth and the last), a dense MLP on the first and 256 experts top-8 with a
/// shared one on the rest. The fixture is moonshotai/Kimi-Linear-48B-A3B-Instruct's config.json
/// as a public model report the code index holds prints it (a Kimi-Linear "模型信息报告", id
/// 62691149540, with the checkpoint's tensor list and its 49,122,681,728 parameters). By that
/// list a KDA layer's matmul weights are q, k, v 4,096 x 2,304 each, `b_proj` 32 x 2,304, the
/// low-rank gates `f_a_proj`/`g_a_proj` 128 x 2,304 and `f_b_proj`/`g_b_proj` 4,096 x 128, and
/// `o_proj` 2,304 x 4,096: 39,460,864 (read as a Gated DeltaNet with full-rank gates it would be
/// 47,333,376); an MLA layer's `q_proj` 6,144 x 2,304, `kv_a_proj_with_mqa` 576 x 2,304,
/// `kv_b_proj` 8,192 x 512 and `o_proj`: 29,114,368. Matmul weights and tables sum to
/// 49,121,476,608, which the planner gives exactly; the other 1,205,120 are norms, convolution
/// taps, decays and router biases. Moonshot (Kimi Linear report, arXiv 2510.26692): 48B total,
/// 3B activated.
#[test]
fn kimi_linear_reads_kda_as_gated_deltanet_with_low_rank_gates_and_mla() {
    let m = resolve(fixture("Kimi-Linear-48B-A3B-Instruct").to_str().unwrap()).unwrap().arch;
    let hy = m.hybrid.unwrap();
    assert_eq!((hy.gdn, hy.attention, hy.mlp, hy.moe, hy.mamba), (20, 7, 1, 26, 0));
    assert_eq!(
        (hy.gdn_key_heads, hy.gdn_value_heads, hy.gdn_key_dim, hy.gdn_value_dim, hy.kda_gate_rank),
        (32, 32, 128, 128, 128)
    );
    assert_eq!(m.kind(), "gdn-hybrid");
    assert_eq!(hy.gdn_params(2304), 39_460_864.0);
    assert_eq!(m.attn_params, 29_114_368.0);
    assert_eq!((m.qk_dim, m.v_dim, m.d_ff), (32 * 192, 32 * 128, 9216));
    let moe = m.moe.unwrap();
    assert_eq!((moe.experts, moe.top_k, moe.shared, moe.expert_d_ff, moe.shared_d_ff), (256, 8, 1, 1024, 1024));
    let total = m.total_params();
    assert_eq!(total, 49_121_476_608.0);
    assert_eq!(49_122_681_728.0 - total, 1_205_120.0);
    // Moonshot's 48B is the checkpoint without its embedding and head (48.37B); 3B activated is
    // 3.11B with the head once (2.73B without it, 3.48B with the embedding too).
    let tables = 2.0 * (m.vocab * m.d_model) as f64;
    assert!((total / 48e9 - 1.0).abs() < 0.03, "{total:.4e}");
    assert!(((total - tables) / 48e9 - 1.0).abs() < 0.01, "{:.4e} without the tables", total - tables);
    let active = m.active_matmul_params();
    assert!((active / 3e9 - 1.0).abs() < 0.05, "{active:.4e} active");
    // What the reader cannot express is refused by name.
    for (key, value, want) in [
        ("use_full_rank_gate", serde_json::json!(true), "use_full_rank_gate"),
        ("mla_use_output_gate", serde_json::json!(true), "mla_use_output_gate"),
        ("routed_expert_hidden_size", serde_json::json!(1024), "routed_expert_hidden_size"),
    ] {
        let mut v = fixture_json("Kimi-Linear-48B-A3B-Instruct");
        if key == "use_full_rank_gate" {
            v["linear_attn_config"][key] = value;
        } else {
            v[key] = value;
        }
        let e = error_for(&format!("kimi-linear-{key}"), &v.to_string());
        assert!(e.contains(want) && e.contains("TOML model file"), "{e}");
    }
    let mut v = fixture_json("Kimi-Linear-48B-A3B-Instruct");
    v["linear_attn_config"]["kda_layers"].as_array_mut().unwrap().remove(0);
    let e = error_for("kimi-linear-layer-missing", &v.to_string());
    assert!(e.contains("layer 1 in neither"), "{e}");
    let mut v = fixture_json("Kimi-Linear-48B-A3B-Instruct");
    v["linear_attn_config"]["kda_layers"].as_array_mut().unwrap().push(serde_json::json!(4));
    let e = error_for("kimi-linear-layer-twice", &v.to_string());
    assert!(e.contains("layer 4 as both"), "{e}");
}

/// `fixture`'s config.json under another `model_type`, with `edit` applied, written as a
/// checkpoint directory and read.
fn renamed(
    dir: &str,
    mt: &str,
    edit: impl FnOnce(&mut serde_json::Value),
) -> anyhow::Result<anychip_plan::model::Model> {
    let mut cfg = fixture_json(dir);
    cfg["model_type"] = mt.into();
    edit(&mut cfg);
    resolve_json(mt, &cfg.to_string())
}

/// A causal language model of a `model_type` the planner does not know is read by
/// transformers' standard field names, and the model says so: a published config under a new
/// name reads as the family whose field names it uses (a dense Llama, Nemotron's plain
/// squared-ReLU MLP, experts named as Qwen-MoE's, Mixtral's or DeepSeek's with latent attention).
#[test]
fn an_unknown_model_type_reads_by_standard_names_and_says_so() {
    let pairs = [
        ("Meta-Llama-3-8B", "llama3-8b", "gated MLP (hidden_act silu)"),
        ("Qwen3-30B-A3B", "qwen3-30b-a3b", "128 experts with Qwen-MoE's field names"),
        ("Mixtral-8x22B-v0.1", "mixtral-8x22b", "8 experts with Mixtral's field names"),
        ("DeepSeek-V3", "deepseek-v3", "256 experts with DeepSeek's field names and latent attention"),
    ];
    for (dir, preset, what) in pairs {
        let m = renamed(dir, "new_family", |_| {}).unwrap_or_else(|e| panic!("{dir}: {e}"));
        assert_eq!(m.arch, resolve(preset).unwrap().arch, "{dir} read by standard names against {preset}");
        let note = m.note.unwrap_or_default();
        assert!(note.contains("model_type 'new_family'") && note.contains(what), "{dir}: {note}");
    }
    // OLMoE names its experts num_experts, intermediate_size wide (no moe_intermediate_size).
    let olmoe = resolve(fixture("OLMoE-1B-7B-0924").to_str().unwrap()).unwrap();
    let renamed_olmoe = renamed("OLMoE-1B-7B-0924", "new_family", |_| {}).unwrap();
    assert_eq!(renamed_olmoe.arch, olmoe.arch);
    assert!(renamed_olmoe.note.unwrap().contains("64 experts with Mixtral's field names"));
    let known = resolve(fixture("Nemotron-4-4B").to_str().unwrap()).unwrap();
    assert_eq!(known.note, None, "a family read by name carries no note");
    let plain = renamed("Nemotron-4-4B", "new_family", |_| {}).unwrap();
    assert_eq!(plain.arch, known.arch, "relu2 reads as Nemotron's plain MLP");
    assert!(plain.note.unwrap().contains("plain MLP (hidden_act relu2)"));
}

/// What transformers' standard names cannot describe stays refused, in one line naming why: a
/// file that is not a causal language model, one without `architectures`, and fields of
/// state-space, linear-attention and hybrid layers, LongCat's zero experts, or latent attention
/// without DeepSeek's experts.
#[test]
fn an_unknown_model_type_is_refused_when_its_fields_are_not_standard() {
    let why =
        |edit: fn(&mut serde_json::Value)| format!("{:#}", renamed("Meta-Llama-3-8B", "new_family", edit).unwrap_err());
    let e = why(|c| c["architectures"] = serde_json::json!(["NewFamilyForMaskedLM"]));
    assert!(e.contains("model_type 'new_family' is not one") && e.contains("causal language model"), "{e}");
    assert!(why(|c| c["architectures"] = serde_json::Value::Null).contains("causal language model"));
    for (key, value) in [
        ("mamba_d_state", serde_json::json!(128)),
        ("conv_kernel", serde_json::json!(4)),
        ("linear_num_value_heads", serde_json::json!(32)),
        ("zero_expert_num", serde_json::json!(256)),
        ("layers_block_type", serde_json::json!(["mamba", "attention"])),
    ] {
        let mut cfg = fixture_json("Meta-Llama-3-8B");
        cfg["model_type"] = "new_family".into();
        cfg[key] = value;
        let e = format!("{:#}", resolve_json("nonstandard", &cfg.to_string()).unwrap_err());
        assert!(e.contains(&format!("it sets '{key}'")) && e.contains("TOML model file"), "{key}: {e}");
        assert!(!e.contains('\n'), "one line: {e}");
    }
    let e = why(|c| c["layer_types"] = serde_json::json!(["linear_attention", "full_attention"]));
    assert!(e.contains("linear_attention"), "{e}");
    let e = why(|c| c["kv_lora_rank"] = serde_json::json!(512));
    assert!(e.contains("kv_lora_rank"), "{e}");
    // Unset fields of those names (null, false, 0) are not a reason to refuse.
    let m = renamed("Meta-Llama-3-8B", "new_family", |c| {
        c["is_encoder_decoder"] = false.into();
        c["use_mamba_kernels"] = serde_json::Value::Null;
    });
    assert_eq!(m.unwrap().arch, resolve("llama3-8b").unwrap().arch);
}
