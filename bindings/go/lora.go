package gomlx

/*
#include <stdint.h>
#include "gomlx.h"

// The exported Go trampoline (lora_callback.go).
extern int32_t gomlxLoraProgress(gm_lora_progress *progress, void *user_data);

// user_data carries a runtime/cgo.Handle: C holds an integer, never a Go pointer.
static int32_t gomlx_lora_train(const char *model, const char *data, const gm_lora_options *opts,
                                uintptr_t handle, gm_lora_result *out) {
	return gm_lora_train(model, data, opts, (gm_lora_progress_fn)gomlxLoraProgress, (void *)handle, out);
}
*/
import "C"

import (
	"context"
	"fmt"
	"math"
	"runtime/cgo"
	"strings"
	"time"
	"unsafe"
)

// LoRAOptions configures TrainLoRA. Zero fields take the default given beside
// them (the defaults of gomlx lora and gm_lora_options).
type LoRAOptions struct {
	AdapterPath string   // directory for adapters.safetensors + adapter_config.json (required unless FusePath)
	FusePath    string   // when set, the fused model directory written after training
	ResumePath  string   // when set, adapters to continue training from
	Targets     []string // projections (q_proj k_proj v_proj o_proj gate_proj up_proj down_proj); nil: q_proj, v_proj

	Iters        int     // training steps (100)
	BatchSize    int     // examples per step (4)
	MaxSeqLength int     // tokens per example, longer ones are truncated (2048)
	Rank         int     // LoRA rank (8)
	NumLayers    int     // adapt the last NumLayers blocks (0: all)
	Scale        float32 // LoRA scale (20); ignored when Alpha > 0
	Alpha        float32 // when > 0, scale = Alpha / Rank
	Dropout      float32 // LoRA dropout (0)
	BF16Adapters bool    // A, B and the AdamW moments in bfloat16 (else float32)

	LearningRate float32 // peak learning rate (1e-5)
	Warmup       int     // linear warm-up steps (0)
	Cosine       bool    // cosine decay to MinLR after the warm-up
	MinLR        float32
	WeightDecay  float32 // AdamW weight decay (0.01 when 0; a tiny value for none)
	GradClip     float32 // clip gradients to this global norm (0: no clipping)

	GradCheckpoint bool   // recompute activations per block in the backward pass
	MaskPrompt     bool   // train on completions only
	FuseDequantize bool   // fuse quantised projections into dense weights
	ValEvery       int    // validate every ValEvery steps when valid.jsonl exists (200)
	SaveEvery      int    // save adapters every SaveEvery steps (100)
	Seed           uint64 // data shuffle, adapter initialisation and dropout
}

// LoRAProgress is what the progress callback receives after each step.
type LoRAProgress struct {
	Step, Iters     int
	Loss            float32
	ValLoss         float32 // NaN when no validation ran at this step
	LearningRate    float32
	GradNorm        float32 // before clipping
	TokensPerSecond float64 // real (non-padding) tokens per second so far
	TrainedTokens   uint64
	PeakMemory      uint64 // MLX bytes since training started
	ActiveMemory    uint64
}

// LoRAStop tells why a TrainLoRA run ended.
type LoRAStop int

const (
	LoRACompleted         LoRAStop = iota // every step ran
	LoRAStoppedByCallback                 // the progress callback returned false
	LoRACancelled                         // the context was cancelled
)

func (s LoRAStop) String() string {
	switch s {
	case LoRACompleted:
		return "completed"
	case LoRAStoppedByCallback:
		return "stopped by the callback"
	case LoRACancelled:
		return "cancelled"
	}
	return fmt.Sprintf("LoRAStop(%d)", int(s))
}

// LoRAResult summarises a TrainLoRA run.
type LoRAResult struct {
	Steps         int
	Stop          LoRAStop
	FirstLoss     float32
	LastLoss      float32
	LastValLoss   float32 // NaN without validation data
	TrainedTokens uint64
	Duration      time.Duration
	PeakMemory    uint64
}

// loraCall is the state the C progress callback reaches through its handle.
// Only the goroutine running TrainLoRA touches it: cgo runs the callback on
// the goroutine that made the C call.
type loraCall struct {
	ctx       context.Context
	progress  func(LoRAProgress) bool
	cancelled bool
	panicked  any
	hasPanic  bool
}

// TrainLoRA fine-tunes LoRA adapters of the model in modelDir (config.json,
// safetensors weights, tokenizer.json) on dataPath: a directory with
// train.jsonl and optionally valid.jsonl, or one JSONL file, in mlx-lm's text,
// prompt/completion or messages format. Adapters are saved in mlx-lm's layout
// to opts.AdapterPath (load them with WithAdapter) and, with opts.FusePath, a
// fused model directory is written.
//
// progress (may be nil) is called after every step, on the calling goroutine;
// returning false stops training after that step. Cancelling ctx stops it too,
// after the step in progress; TrainLoRA then returns ctx's error along with
// the result (Stop == LoRACancelled). Either way the adapters trained so far
// are saved. TrainLoRA blocks for the whole run; a panic in progress is
// re-raised once the engine has stopped.
func TrainLoRA(ctx context.Context, modelDir, dataPath string, opts LoRAOptions, progress func(LoRAProgress) bool) (LoRAResult, error) {
	if err := ctx.Err(); err != nil {
		return LoRAResult{}, err
	}
	var m cmem
	defer m.free()
	cmodel, err := m.str("model dir", modelDir)
	if err != nil {
		return LoRAResult{}, err
	}
	cdata, err := m.str("data path", dataPath)
	if err != nil {
		return LoRAResult{}, err
	}
	co, err := opts.toC(&m)
	if err != nil {
		return LoRAResult{}, err
	}
	var r C.gm_lora_result
	r.struct_size = C.size_t(unsafe.Sizeof(r))
	state := &loraCall{ctx: ctx, progress: progress}
	h := cgo.NewHandle(state)
	err = call("gm_lora_train", func() bool {
		return C.gomlx_lora_train(cmodel, cdata, co, C.uintptr_t(h), &r) != C.GM_OK
	})
	h.Delete()
	if state.hasPanic {
		panic(state.panicked)
	}
	if err != nil {
		return LoRAResult{}, err
	}
	res := LoRAResult{
		Steps:         int(r.steps),
		FirstLoss:     float32(r.first_loss),
		LastLoss:      float32(r.last_loss),
		LastValLoss:   float32(r.last_val_loss),
		TrainedTokens: uint64(r.trained_tokens),
		Duration:      time.Duration(float64(r.seconds) * float64(time.Second)),
		PeakMemory:    uint64(r.peak_memory),
	}
	if r.stopped_early != 0 {
		if state.cancelled {
			res.Stop = LoRACancelled
			return res, ctx.Err()
		}
		res.Stop = LoRAStoppedByCallback
	}
	return res, nil
}

// onProgress runs for every step (called by the exported trampoline): the
// context first, then the user's callback; true stops the run.
func (c *loraCall) onProgress(p *C.gm_lora_progress) (stop bool) {
	defer func() {
		// A panic must not unwind through the C frames: keep it for TrainLoRA.
		if v := recover(); v != nil {
			c.panicked, c.hasPanic, stop = v, true, true
		}
	}()
	if c.ctx.Err() != nil {
		c.cancelled = true
		return true
	}
	if c.progress == nil {
		return false
	}
	return !c.progress(LoRAProgress{
		Step:            int(p.step),
		Iters:           int(p.iters),
		Loss:            float32(p.loss),
		ValLoss:         float32(p.val_loss),
		LearningRate:    float32(p.learning_rate),
		GradNorm:        float32(p.grad_norm),
		TokensPerSecond: float64(p.tokens_per_second),
		TrainedTokens:   uint64(p.trained_tokens),
		PeakMemory:      uint64(p.peak_memory),
		ActiveMemory:    uint64(p.active_memory),
	})
}

func u32(what string, n int) (C.uint32_t, error) {
	if n < 0 || n > math.MaxUint32 {
		return 0, fmt.Errorf("gomlx: LoRA %s %d is out of range", what, n)
	}
	return C.uint32_t(n), nil
}

func cbool(b bool) C.int32_t {
	if b {
		return 1
	}
	return 0
}

func (o *LoRAOptions) toC(m *cmem) (*C.gm_lora_options, error) {
	c := (*C.gm_lora_options)(m.alloc(int(unsafe.Sizeof(C.gm_lora_options{}))))
	c.struct_size = C.size_t(unsafe.Sizeof(*c))
	var err error
	for _, s := range []struct {
		dst  **C.char
		what string
		v    string
	}{
		{&c.adapter_path, "adapter path", o.AdapterPath},
		{&c.fuse_path, "fuse path", o.FusePath},
		{&c.resume_path, "resume path", o.ResumePath},
		{&c.targets, "targets", strings.Join(o.Targets, ",")},
	} {
		if s.v != "" {
			if *s.dst, err = m.str(s.what, s.v); err != nil {
				return nil, err
			}
		}
	}
	for _, f := range []struct {
		dst  *C.uint32_t
		what string
		v    int
	}{
		{&c.iters, "iters", o.Iters},
		{&c.batch_size, "batch size", o.BatchSize},
		{&c.max_seq_length, "max sequence length", o.MaxSeqLength},
		{&c.rank, "rank", o.Rank},
		{&c.num_layers, "num layers", o.NumLayers},
		{&c.warmup, "warmup", o.Warmup},
		{&c.val_every, "val every", o.ValEvery},
		{&c.save_every, "save every", o.SaveEvery},
	} {
		if *f.dst, err = u32(f.what, f.v); err != nil {
			return nil, err
		}
	}
	c.learning_rate = C.float(o.LearningRate)
	c.scale = C.float(o.Scale)
	c.alpha = C.float(o.Alpha)
	c.dropout = C.float(o.Dropout)
	c.weight_decay = C.float(o.WeightDecay)
	c.grad_clip = C.float(o.GradClip)
	c.min_lr = C.float(o.MinLR)
	c.cosine = cbool(o.Cosine)
	c.grad_checkpoint = cbool(o.GradCheckpoint)
	c.mask_prompt = cbool(o.MaskPrompt)
	c.lora_bf16 = cbool(o.BF16Adapters)
	c.fuse_dequantize = cbool(o.FuseDequantize)
	c.seed = C.uint64_t(o.Seed)
	return c, nil
}
