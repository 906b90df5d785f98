//! config.json in both dialects parses to the same settings.

use gomlx::models::config::{ModelConfig, Quant, RopeScaling};

const HUB_LLAMA3: &str = r#"{"model_type":"llama","hidden_size":64,"num_hidden_layers":2,"num_attention_heads":4,
 "num_key_value_heads":2,"intermediate_size":128,"vocab_size":256,"rope_theta":500000.0,
 "rope_scaling":{"rope_type":"llama3","factor":8.0,"low_freq_factor":1.0,"high_freq_factor":4.0,"original_max_position_embeddings":64},
 "torch_dtype":"bfloat16","tie_word_embeddings":true}"#;

const TF5_LLAMA3: &str = r#"{"model_type":"llama","hidden_size":64,"num_hidden_layers":2,"num_attention_heads":4,
 "num_key_value_heads":2,"intermediate_size":128,"vocab_size":256,
 "rope_parameters":{"rope_type":"llama3","rope_theta":500000.0,"factor":8.0,"low_freq_factor":1.0,"high_freq_factor":4.0,"original_max_position_embeddings":64},
 "dtype":"bfloat16","tie_word_embeddings":true}"#;

#[test]
fn llama3_rope_in_both_dialects() {
    let a = ModelConfig::from_json_str(HUB_LLAMA3).unwrap();
    let b = ModelConfig::from_json_str(TF5_LLAMA3).unwrap();
    assert_eq!(a, b);
    assert_eq!(a.rope.theta, 500000.0);
    assert_eq!(a.rope.scaling, RopeScaling::Llama3 { factor: 8.0, low_freq_factor: 1.0, high_freq_factor: 4.0, original_max_position: 64.0 });
    assert_eq!(a.dtype, gomlx::mlx::Dtype::BF16);
    assert_eq!(a.head_dim, 16);
}

#[test]
fn gemma3_pattern_and_layer_types_agree() {
    let hub = r#"{"model_type":"gemma3_text","hidden_size":64,"num_hidden_layers":6,"num_attention_heads":4,
      "num_key_value_heads":1,"head_dim":32,"intermediate_size":128,"vocab_size":256,"sliding_window":8,
      "sliding_window_pattern":3,"rope_theta":1000000.0,"rope_local_base_freq":10000.0,"query_pre_attn_scalar":24,
      "final_logit_softcapping":30.0}"#;
    let tf5 = r#"{"model_type":"gemma3_text","hidden_size":64,"num_hidden_layers":6,"num_attention_heads":4,
      "num_key_value_heads":1,"head_dim":32,"intermediate_size":128,"vocab_size":256,"sliding_window":8,
      "layer_types":["sliding_attention","sliding_attention","full_attention","sliding_attention","sliding_attention","full_attention"],
      "rope_parameters":{"full_attention":{"rope_type":"default","rope_theta":1000000.0},"sliding_attention":{"rope_type":"default","rope_theta":10000.0}},
      "query_pre_attn_scalar":24,"final_logit_softcapping":30.0}"#;
    let a = ModelConfig::from_json_str(hub).unwrap();
    let b = ModelConfig::from_json_str(tf5).unwrap();
    assert_eq!(a, b);
    assert_eq!(a.sliding, vec![true, true, false, true, true, false]);
    assert_eq!(a.rope_local.as_ref().unwrap().theta, 10000.0);
    assert_eq!(a.rope.theta, 1000000.0);
    assert!((a.attn_scale - 1.0 / 24f32.sqrt()).abs() < 1e-7);
    assert!(a.tie_word_embeddings && a.qk_norm);
    assert_eq!(a.final_logit_softcapping, Some(30.0));
}

#[test]
fn multimodal_gemma3_text_config() {
    let cfg = r#"{"model_type":"gemma3","text_config":{"hidden_size":64,"num_hidden_layers":2,"num_attention_heads":4,
      "num_key_value_heads":1,"intermediate_size":128,"vocab_size":256,"sliding_window":8},"torch_dtype":"bfloat16"}"#;
    let c = ModelConfig::from_json_str(cfg).unwrap();
    assert_eq!(c.model_type, "gemma3");
    assert_eq!(c.family, "gemma3");
    assert_eq!(c.dtype, gomlx::mlx::Dtype::BF16);
    // Default Gemma pattern: every sixth layer global.
    assert_eq!(c.sliding, vec![true, true]);
}

#[test]
fn quantization_with_overrides() {
    let cfg = r#"{"model_type":"qwen3","hidden_size":64,"num_hidden_layers":1,"num_attention_heads":4,
      "intermediate_size":128,"vocab_size":256,
      "quantization":{"group_size":64,"bits":4,"model.embed_tokens":{"group_size":32,"bits":8},"lm_head":false}}"#;
    let c = ModelConfig::from_json_str(cfg).unwrap();
    let q = &c.quantization;
    assert_eq!(q.for_module("model.layers.0.mlp.up_proj"), Some(Quant::affine(64, 4)));
    assert_eq!(q.for_module("model.embed_tokens"), Some(Quant::affine(32, 8)));
    assert_eq!(q.for_module("lm_head"), None);
    assert!(c.qk_norm && !c.qkv_bias);
    let bad = cfg.replace("\"bits\":4", "\"bits\":7");
    assert!(ModelConfig::from_json_str(&bad).unwrap_err().to_string().contains("bits=7"));
}

#[test]
fn qwen2_has_qkv_bias_and_unsupported_rope_is_named() {
    let cfg = r#"{"model_type":"qwen2","hidden_size":64,"num_hidden_layers":1,"num_attention_heads":4,
      "num_key_value_heads":2,"intermediate_size":128,"vocab_size":256}"#;
    let c = ModelConfig::from_json_str(cfg).unwrap();
    assert!(c.qkv_bias && !c.o_bias);
    let longrope = cfg.replace("\"vocab_size\":256", "\"vocab_size\":256,\"rope_scaling\":{\"rope_type\":\"longrope\",\"factor\":4.0}");
    assert!(ModelConfig::from_json_str(&longrope).unwrap_err().to_string().contains("unsupported rope_type 'longrope'"));
    // YaRN loads, but needs the context it was trained on.
    let yarn = cfg.replace("\"vocab_size\":256", "\"vocab_size\":256,\"rope_scaling\":{\"rope_type\":\"yarn\",\"factor\":4.0}");
    assert!(ModelConfig::from_json_str(&yarn).unwrap_err().to_string().contains("original_max_position_embeddings"));
    let heads = cfg.replace("\"num_key_value_heads\":2", "\"num_key_value_heads\":3");
    assert!(ModelConfig::from_json_str(&heads).unwrap_err().to_string().contains("multiple of num_key_value_heads"));
}

/// Gemma 4: the hub's `global_head_dim` / `num_global_key_value_heads` and
/// transformers 5.20.2's `per_layer_config` describe the same layers; without
/// `layer_types` and `rope_parameters` transformers' defaults apply (5 sliding
/// layers to 1 global, the last always global; proportional RoPE on a quarter
/// of the global heads); settings that are not a causal text model are refused.
#[test]
fn gemma4_layouts_defaults_and_refusals() {
    let common = r#""model_type":"gemma4_text","hidden_size":64,"num_hidden_layers":4,"num_attention_heads":4,
      "num_key_value_heads":2,"head_dim":16,"intermediate_size":128,"vocab_size":256,"sliding_window":8,
      "layer_types":["sliding_attention","full_attention","sliding_attention","full_attention"],
      "hidden_size_per_layer_input":0,"attention_k_eq_v":true,
      "rope_parameters":{"full_attention":{"rope_type":"proportional","partial_rotary_factor":0.25,"rope_theta":1000000.0},
        "sliding_attention":{"rope_type":"default","rope_theta":10000.0}}"#;
    let hub = format!(r#"{{"model_type":"gemma4","text_config":{{{common},"global_head_dim":32,"num_global_key_value_heads":1}}}}"#);
    let tf5 = format!(r#"{{{common},"per_layer_config":{{"1":{{"head_dim":32,"num_key_value_heads":1}},"3":{{"head_dim":32,"num_key_value_heads":1}}}}}}"#);
    let a = ModelConfig::from_json_str(&hub).unwrap();
    let b = ModelConfig::from_json_str(&tf5).unwrap();
    assert_eq!(a, b);
    let g = a.gemma4.as_ref().unwrap();
    assert_eq!((g.head_dims.clone(), g.kv_heads.clone()), (vec![16, 32, 16, 32], vec![2, 1, 2, 1]));
    assert_eq!((a.layer_kv(0), a.layer_kv(1)), ((2, 16), (1, 32)));
    assert_eq!(a.rope.scaling, RopeScaling::Proportional { factor: 1.0, fraction: 0.25 });
    assert_eq!(a.attn_scale, 1.0);

    let bare = r#"{"model_type":"gemma4_text","hidden_size":64,"num_hidden_layers":8,"num_attention_heads":4,
      "num_key_value_heads":2,"head_dim":16,"intermediate_size":128,"vocab_size":256}"#;
    let c = ModelConfig::from_json_str(bare).unwrap();
    assert_eq!(c.sliding, vec![true, true, true, true, true, false, true, false]);
    assert_eq!(c.sliding_window, Some(512));
    assert_eq!(c.rope.scaling, RopeScaling::Proportional { factor: 1.0, fraction: 0.25 });
    let g = c.gemma4.as_ref().unwrap();
    // Global KV heads apply only where keys are values.
    assert_eq!((g.head_dims[5], g.kv_heads[5], g.per_layer_input), (512, 2, 256));

    let refused = |extra: &str, want: &str| {
        let text = format!(r#"{{{common},{extra}}}"#);
        let err = ModelConfig::from_json_str(&text).unwrap_err().to_string();
        assert!(err.contains(want), "{extra}: {err}");
    };
    refused(r#""use_bidirectional_attention":"all""#, "use_bidirectional_attention");
    refused(r#""hidden_activation":"silu""#, "hidden_activation");
    refused(r#""per_layer_config":{"1":{"sliding_window":4}}"#, "per_layer_config.1.sliding_window");
    refused(r#""num_kv_shared_layers":4"#, "no earlier layer");
    refused(r#""enable_moe_block":true,"num_experts":4"#, "top_k_experts");
}
