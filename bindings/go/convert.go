package gomlx

/*
#include <stdint.h>
#include "gomlx.h"

// The exported Go trampoline (convert_callback.go).
extern int32_t gomlxConvertProgress(size_t done, size_t total, void *user_data);

// user_data carries a runtime/cgo.Handle: C holds an integer, never a Go pointer.
static int32_t gomlx_convert(const char *gguf, const char *out, const gm_convert_options *opts, uintptr_t handle) {
	return gm_convert(gguf, out, opts, (gm_convert_progress_fn)gomlxConvertProgress, (void *)handle);
}
*/
import "C"

import (
	"context"
	"runtime/cgo"
	"unsafe"
)

// ConvertMode says what Convert does with the tensors.
type ConvertMode int

const (
	// ConvertDequantize writes every tensor as floats (DType, default bfloat16).
	ConvertDequantize ConvertMode = C.GM_CONVERT_DEQUANTIZE
	// ConvertQuantize re-quantises Linear and embedding weights with MLX affine
	// quantisation (Bits, GroupSize), as mlx_lm.convert -q does.
	ConvertQuantize ConvertMode = C.GM_CONVERT_QUANTIZE
	// ConvertKeep keeps MLX-representable quantised blocks bit for bit.
	ConvertKeep ConvertMode = C.GM_CONVERT_KEEP
)

// ConvertOptions configures Convert; the zero value dequantises to bfloat16.
type ConvertOptions struct {
	Mode ConvertMode
	// DType of float tensors and scales/biases: "bfloat16", "float16" or
	// "float32"; "" = bfloat16 when dequantising, float32 otherwise.
	DType string
	// Bits (2, 3, 4, 5, 6, 8; 0 = 4) and GroupSize (32, 64, 128; 0 = 64) of ConvertQuantize.
	Bits, GroupSize int
}

type convertCall struct {
	ctx      context.Context
	progress func(done, total int) bool
	panicked any
	hasPanic bool
}

// Convert turns the GGUF file ggufPath into a model directory outDir
// (config.json, model.safetensors, tokenizer files) that gomlx and mlx-lm load.
// progress (may be nil) is called after each tensor; returning false, or ctx
// ending, stops the conversion with an error. It blocks the calling goroutine.
func Convert(ctx context.Context, ggufPath, outDir string, opts ConvertOptions, progress func(done, total int) bool) error {
	var m cmem
	defer m.free()
	cg, err := m.str("gguf path", ggufPath)
	if err != nil {
		return err
	}
	co, err := m.str("out dir", outDir)
	if err != nil {
		return err
	}
	o := (*C.gm_convert_options)(m.alloc(int(unsafe.Sizeof(C.gm_convert_options{}))))
	o.struct_size = C.size_t(unsafe.Sizeof(*o))
	o.mode = C.int32_t(opts.Mode)
	o.bits = C.int32_t(opts.Bits)
	o.group_size = C.int32_t(opts.GroupSize)
	if opts.DType != "" {
		if o.dtype, err = m.str("dtype", opts.DType); err != nil {
			return err
		}
	}
	state := &convertCall{ctx: ctx, progress: progress}
	h := cgo.NewHandle(state)
	err = call("gm_convert", func() bool { return C.gomlx_convert(cg, co, o, C.uintptr_t(h)) != C.GM_OK })
	h.Delete()
	if state.hasPanic {
		panic(state.panicked)
	}
	if err != nil && ctx.Err() != nil {
		return ctx.Err()
	}
	return err
}

// onProgress runs after each tensor: the context first, then the callback; true stops.
func (c *convertCall) onProgress(done, total int) (stop bool) {
	defer func() {
		// A panic must not unwind through the C frames: keep it for Convert.
		if v := recover(); v != nil {
			c.panicked, c.hasPanic, stop = v, true, true
		}
	}()
	if c.ctx.Err() != nil {
		return true
	}
	return c.progress != nil && !c.progress(done, total)
}
