package gomlx

/*
#include "gomlx.h"
*/
import "C"

import (
	"encoding/json"
	"fmt"
	"sort"
	"unsafe"
)

// Device selects where a model runs.
type Device int

const (
	DeviceDefault Device = C.GM_DEVICE_DEFAULT // GPU where MLX has one, else CPU
	DeviceCPU     Device = C.GM_DEVICE_CPU
	DeviceGPU     Device = C.GM_DEVICE_GPU
)

type loadConfig struct {
	device        Device
	dtype         string
	contextLength int
	memoryLimit   uint64
	cacheLimit    uint64
	adapter       string
	tuning        Tuning
	maxBatch      int
	prefixCache   uint64
	replicas      int
	distributed   string
	moeSplit      string
}

// WithMaxBatch bounds how many generations decode in one batch (continuous
// batching; more wait for a row). 0 = the default (64 on a GPU, 32 on the CPU).
func WithMaxBatch(n int) LoadOption { return func(c *loadConfig) { c.maxBatch = n } }

// WithPrefixCache keeps up to bytes of KV from finished requests, so requests
// that share a prompt prefix (a system prompt, earlier chat turns) skip its
// prefill. 0 = off (the default).
func WithPrefixCache(bytes uint64) LoadOption { return func(c *loadConfig) { c.prefixCache = bytes } }

// WithReplicas loads n engines, each a whole copy of the model, that serve this
// model's requests by least outstanding work (throughput; on GPUs replica i runs
// on GPU i, on the CPU all share it). 0 or 1 = one engine.
func WithReplicas(n int) LoadOption { return func(c *loadConfig) { c.replicas = n } }

// Tuning holds the device-strategy knobs (docs/tuning.md). A nil field takes
// the GOMLX_* environment variable, else the default.
type Tuning struct {
	Widen           *bool  // CPU: widen weights at load (GOMLX_CPU_WEIGHTS)
	Dequantize      *bool  // CPU: expand quantised matrices at load (GOMLX_CPU_DEQUANTIZE)
	MemoryBudget    uint64 // CPU: bytes the widened weights may take; 0 = default (GOMLX_CPU_MEMORY_BUDGET)
	FuseProjections *bool  // one matmul for q/k/v (GOMLX_FUSE_PROJECTIONS)
	Compile         *bool  // compiled MLP activation (GOMLX_COMPILE)
	CPUDenseQMMRows int    // 0 = default, negative = never (GOMLX_CPU_DENSE_QMM_ROWS)
	GPUDenseQMMRows int    // 0 = default, negative = never (GOMLX_GPU_DENSE_QMM_ROWS)
	CPUSplitOut     int    // 0 = default, negative = never (GOMLX_CPU_SPLIT_OUT)
	BLASThreads     int    // process-wide; 0 = default (GOMLX_NUM_THREADS)
	BLASGemv        *bool  // process-wide (GOMLX_BLAS_GEMV)
}

// WithTuning sets device-strategy knobs for this model (and the process-wide BLAS ones).
func WithTuning(t Tuning) LoadOption { return func(c *loadConfig) { c.tuning = t } }

// Bool is a helper for Tuning's optional switches: gomlx.Bool(true).
func Bool(v bool) *bool { return &v }

func onOff(v *bool) C.int32_t {
	switch {
	case v == nil:
		return 0
	case *v:
		return C.GM_ON
	default:
		return C.GM_OFF
	}
}

// LoadOption configures LoadModel.
type LoadOption func(*loadConfig)

// WithDevice runs the model on the CPU or GPU (default: GPU where available).
func WithDevice(d Device) LoadOption { return func(c *loadConfig) { c.device = d } }

// WithDType overrides the compute dtype: "float32", "float16" or "bfloat16".
func WithDType(dtype string) LoadOption { return func(c *loadConfig) { c.dtype = dtype } }

// WithContextLength bounds prompt + output tokens of every request.
func WithContextLength(n int) LoadOption { return func(c *loadConfig) { c.contextLength = n } }

// WithMemoryLimit sets MLX's process-wide memory limit (bytes) before loading.
func WithMemoryLimit(bytes uint64) LoadOption { return func(c *loadConfig) { c.memoryLimit = bytes } }

// WithCacheLimit sets MLX's process-wide buffer-cache limit (bytes) before loading.
func WithCacheLimit(bytes uint64) LoadOption { return func(c *loadConfig) { c.cacheLimit = bytes } }

// WithAdapter applies a LoRA adapter directory in mlx-lm's layout
// (adapters.safetensors + adapter_config.json, as TrainLoRA, gomlx lora and
// mlx_lm.lora write it) at load. An adapter that does not fit the model fails
// LoadModel with an error naming what does not fit.
func WithAdapter(path string) LoadOption { return func(c *loadConfig) { c.adapter = path } }

// loadOptions applies opts and converts them; the C struct lives in m.
func loadOptions(m *cmem, opts []LoadOption) (*C.gm_load_options, error) {
	var c loadConfig
	for _, f := range opts {
		f(&c)
	}
	return c.toC(m)
}

func (c *loadConfig) toC(m *cmem) (*C.gm_load_options, error) {
	o := (*C.gm_load_options)(m.alloc(int(unsafe.Sizeof(C.gm_load_options{}))))
	o.struct_size = C.size_t(unsafe.Sizeof(*o))
	o.device = C.int32_t(c.device)
	if c.contextLength < 0 {
		return nil, fmt.Errorf("gomlx: context length %d < 0", c.contextLength)
	}
	o.context_length = C.size_t(c.contextLength)
	o.memory_limit = C.size_t(c.memoryLimit)
	o.cache_limit = C.size_t(c.cacheLimit)
	t := c.tuning
	if t.BLASThreads < 0 {
		return nil, fmt.Errorf("gomlx: BLAS threads %d < 0", t.BLASThreads)
	}
	o.widen, o.dequantize, o.fuse_projections, o.compile, o.blas_gemv = onOff(t.Widen), onOff(t.Dequantize), onOff(t.FuseProjections), onOff(t.Compile), onOff(t.BLASGemv)
	o.memory_budget = C.uint64_t(t.MemoryBudget)
	o.cpu_dense_qmm_rows, o.gpu_dense_qmm_rows, o.cpu_split_out = C.int64_t(t.CPUDenseQMMRows), C.int64_t(t.GPUDenseQMMRows), C.int64_t(t.CPUSplitOut)
	o.blas_threads = C.uint32_t(t.BLASThreads)
	if c.maxBatch < 0 {
		return nil, fmt.Errorf("gomlx: max batch %d < 0", c.maxBatch)
	}
	o.max_batch = C.size_t(c.maxBatch)
	o.prefix_cache_bytes = C.size_t(c.prefixCache)
	if c.replicas < 0 {
		return nil, fmt.Errorf("gomlx: WithReplicas(%d): must be at least 0", c.replicas)
	}
	o.replicas = C.size_t(c.replicas)
	var err error
	if c.distributed != "" {
		if o.distributed, err = m.str("distributed backend", c.distributed); err != nil {
			return nil, err
		}
	}
	if c.moeSplit != "" {
		if o.moe_split, err = m.str("MoE split", c.moeSplit); err != nil {
			return nil, err
		}
	}
	if c.dtype != "" {
		if o.dtype, err = m.str("dtype", c.dtype); err != nil {
			return nil, err
		}
	}
	if c.adapter != "" {
		if o.adapter_path, err = m.str("adapter path", c.adapter); err != nil {
			return nil, err
		}
	}
	return o, nil
}

type genConfig struct {
	maxTokens             int
	temperature           float32
	topK                  int
	topP, minP            float32
	repetitionPenalty     float32
	repetitionContextSize int
	presencePenalty       float32
	frequencyPenalty      float32
	seed                  *uint64
	logprobs              bool
	topLogprobs           int
	stop                  []string
	ignoreEOS             bool
	prefillChunk          int
	logitBias             map[uint32]float32
	templateArgs          map[string]any
	constraint            string // JSON; "" = none
	tools                 string // JSON array; "" = none
	toolChoice            string
	err                   error // from an option that could not be built
}

// GenerateOption configures Generate, Chat and BatchGenerate. Unset options
// keep the engine's defaults (256 tokens, greedy).
type GenerateOption func(*genConfig)

// WithMaxTokens bounds the tokens generated.
func WithMaxTokens(n int) GenerateOption { return func(c *genConfig) { c.maxTokens = n } }

// WithTemperature samples at this temperature (0 = greedy).
func WithTemperature(t float32) GenerateOption { return func(c *genConfig) { c.temperature = t } }

// WithTopK keeps only the k most likely tokens.
func WithTopK(k int) GenerateOption { return func(c *genConfig) { c.topK = k } }

// WithTopP is nucleus sampling with mass p in (0, 1].
func WithTopP(p float32) GenerateOption { return func(c *genConfig) { c.topP = p } }

// WithMinP drops tokens below p times the top token's probability.
func WithMinP(p float32) GenerateOption { return func(c *genConfig) { c.minP = p } }

// WithRepetitionPenalty penalises tokens seen in the last contextSize tokens
// (contextSize 0 = 20).
func WithRepetitionPenalty(penalty float32, contextSize int) GenerateOption {
	return func(c *genConfig) { c.repetitionPenalty, c.repetitionContextSize = penalty, contextSize }
}

// WithPresencePenalty subtracts penalty from every token generated before.
func WithPresencePenalty(p float32) GenerateOption {
	return func(c *genConfig) { c.presencePenalty = p }
}

// WithFrequencyPenalty subtracts penalty × count of each generated token.
func WithFrequencyPenalty(p float32) GenerateOption {
	return func(c *genConfig) { c.frequencyPenalty = p }
}

// WithSeed makes sampling reproducible.
func WithSeed(seed uint64) GenerateOption { return func(c *genConfig) { c.seed = &seed } }

// WithLogprobs reports each token's log-probability and the top n alternatives.
func WithLogprobs(top int) GenerateOption {
	return func(c *genConfig) { c.logprobs, c.topLogprobs = true, top }
}

// WithStop ends generation at any of these strings (not part of the output).
func WithStop(stop ...string) GenerateOption {
	return func(c *genConfig) { c.stop = append(c.stop, stop...) }
}

// WithIgnoreEOS keeps generating past end-of-sequence tokens.
func WithIgnoreEOS() GenerateOption { return func(c *genConfig) { c.ignoreEOS = true } }

// WithPrefillChunk sets the prompt tokens evaluated per prefill step.
func WithPrefillChunk(n int) GenerateOption { return func(c *genConfig) { c.prefillChunk = n } }

// WithLogitBias adds bias to token logits (math.Inf(-1) bans a token).
func WithLogitBias(bias map[uint32]float32) GenerateOption {
	return func(c *genConfig) { c.logitBias = bias }
}

// WithChatTemplateArgs passes extra variables to the chat template, e.g.
// map[string]any{"enable_thinking": false} for Qwen 3.
func WithChatTemplateArgs(args map[string]any) GenerateOption {
	return func(c *genConfig) { c.templateArgs = args }
}

func nonNeg(what string, n int) (C.size_t, error) {
	if n < 0 {
		return 0, fmt.Errorf("gomlx: %s %d < 0", what, n)
	}
	return C.size_t(n), nil
}

func genOptions(m *cmem, opts []GenerateOption) (*C.gm_generate_options, error) {
	var c genConfig
	for _, f := range opts {
		f(&c)
	}
	if c.err != nil {
		return nil, c.err
	}
	o := (*C.gm_generate_options)(m.alloc(int(unsafe.Sizeof(C.gm_generate_options{}))))
	o.struct_size = C.size_t(unsafe.Sizeof(*o))
	var err error
	for _, f := range []struct {
		dst  *C.size_t
		what string
		v    int
	}{
		{&o.max_tokens, "max tokens", c.maxTokens},
		{&o.top_k, "top k", c.topK},
		{&o.repetition_context_size, "repetition context size", c.repetitionContextSize},
		{&o.top_logprobs, "top logprobs", c.topLogprobs},
		{&o.prefill_chunk, "prefill chunk", c.prefillChunk},
	} {
		if *f.dst, err = nonNeg(f.what, f.v); err != nil {
			return nil, err
		}
	}
	o.temperature = C.float(c.temperature)
	o.top_p = C.float(c.topP)
	o.min_p = C.float(c.minP)
	o.repetition_penalty = C.float(c.repetitionPenalty)
	o.presence_penalty = C.float(c.presencePenalty)
	o.frequency_penalty = C.float(c.frequencyPenalty)
	if c.seed != nil {
		o.seed = C.uint64_t(*c.seed)
		o.has_seed = true
	}
	o.logprobs = C.bool(c.logprobs)
	o.ignore_eos = C.bool(c.ignoreEOS)
	if o.stop, err = m.strs("stop", c.stop); err != nil {
		return nil, err
	}
	o.n_stop = C.size_t(len(c.stop))
	if len(c.logitBias) > 0 {
		ids := make([]uint32, 0, len(c.logitBias))
		for id := range c.logitBias {
			ids = append(ids, id)
		}
		sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
		arr := unsafe.Slice((*C.gm_logit_bias)(m.alloc(len(ids)*int(unsafe.Sizeof(C.gm_logit_bias{})))), len(ids))
		for i, id := range ids {
			arr[i] = C.gm_logit_bias{token: C.uint32_t(id), bias: C.float(c.logitBias[id])}
		}
		o.logit_bias = &arr[0]
		o.n_logit_bias = C.size_t(len(ids))
	}
	if c.templateArgs != nil {
		js, err := json.Marshal(c.templateArgs)
		if err != nil {
			return nil, fmt.Errorf("gomlx: chat template args: %w", err)
		}
		if o.chat_template_args, err = m.str("chat template args", string(js)); err != nil {
			return nil, err
		}
	}
	for _, f := range []struct {
		dst  **C.char
		what string
		v    string
	}{{&o.constraint, "constraint", c.constraint}, {&o.tools, "tools", c.tools}, {&o.tool_choice, "tool choice", c.toolChoice}} {
		if f.v != "" {
			if *f.dst, err = m.str(f.what, f.v); err != nil {
				return nil, err
			}
		}
	}
	return o, nil
}

type classifyConfig struct {
	labels         []string
	labelsSet      bool
	logprobs       bool
	logits         bool
	batchSize      int
	memoryBudget   uint64
	noSharedPrefix bool
}

// ClassifyOption configures Classify.
type ClassifyOption func(*classifyConfig)

// WithLabels restricts answers to these labels (each by its first token;
// labels must start with different tokens) and reports their probabilities.
func WithLabels(labels ...string) ClassifyOption {
	return func(c *classifyConfig) { c.labels, c.labelsSet = labels, true }
}

// WithAnswerLogprobs reports each answer's log-probability over the vocabulary.
func WithAnswerLogprobs() ClassifyOption { return func(c *classifyConfig) { c.logprobs = true } }

// WithLogits returns each prompt's full last-position logits.
func WithLogits() ClassifyOption { return func(c *classifyConfig) { c.logits = true } }

// WithBatchSize caps the prompts per batch (default: sized from the memory budget).
func WithBatchSize(n int) ClassifyOption { return func(c *classifyConfig) { c.batchSize = n } }

// WithMemoryBudget bounds a batch's activations and KV in bytes (default 1 GiB).
func WithMemoryBudget(bytes uint64) ClassifyOption {
	return func(c *classifyConfig) { c.memoryBudget = bytes }
}

// WithoutSharedPrefix evaluates every prompt in full even when they share a prefix.
func WithoutSharedPrefix() ClassifyOption { return func(c *classifyConfig) { c.noSharedPrefix = true } }

func classifyOptions(m *cmem, opts []ClassifyOption) (*C.gm_classify_options, *classifyConfig, error) {
	var c classifyConfig
	for _, f := range opts {
		f(&c)
	}
	o := (*C.gm_classify_options)(m.alloc(int(unsafe.Sizeof(C.gm_classify_options{}))))
	o.struct_size = C.size_t(unsafe.Sizeof(*o))
	var err error
	if c.labelsSet && len(c.labels) == 0 {
		return nil, nil, fmt.Errorf("gomlx: the label set is empty")
	}
	if o.labels, err = m.strs("labels", c.labels); err != nil {
		return nil, nil, err
	}
	o.n_labels = C.size_t(len(c.labels))
	o.logprobs = C.bool(c.logprobs)
	o.logits = C.bool(c.logits)
	if o.batch_size, err = nonNeg("batch size", c.batchSize); err != nil {
		return nil, nil, err
	}
	o.memory_budget = C.size_t(c.memoryBudget)
	o.no_shared_prefix = C.bool(c.noSharedPrefix)
	return o, &c, nil
}
