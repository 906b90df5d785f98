package gomlx

/*
#include "gomlx.h"
*/
import "C"

import (
	"context"
	"time"
	"unsafe"
)

// ClassifyResult is the answer for one prompt.
type ClassifyResult struct {
	Token      uint32    // the arg-max next token (over the labels when given)
	Text       string    // its text
	Logprob    float32   // NaN unless WithAnswerLogprobs
	Label      int       // index of the most probable label; -1 without labels
	LabelProbs []float32 // probability of each label (summing to 1); nil without labels
	Logits     []float32 // the full last-position logits with WithLogits
}

// BatchMetrics tells how a Classify or BatchGenerate call went.
type BatchMetrics struct {
	Prompts             int
	PromptTokens        int
	SharedPrefixTokens  int
	GeneratedTokens     int
	Batches             int
	Total               time.Duration
	PromptsPerSec       float64
	PrefillTokensPerSec float64
	DecodeTokensPerSec  float64
	PeakMemoryBytes     uint64
	ActiveMemoryBytes   uint64
}

func batchMetrics(m *C.gm_batch_metrics) BatchMetrics {
	return BatchMetrics{
		Prompts: int(m.prompts), PromptTokens: int(m.prompt_tokens), SharedPrefixTokens: int(m.shared_prefix_tokens),
		GeneratedTokens: int(m.generated_tokens), Batches: int(m.batches), Total: seconds(m.total_s),
		PromptsPerSec: float64(m.prompts_per_s), PrefillTokensPerSec: float64(m.prefill_tokens_per_s),
		DecodeTokensPerSec: float64(m.decode_tokens_per_s), PeakMemoryBytes: uint64(m.peak_memory_bytes),
		ActiveMemoryBytes: uint64(m.active_memory_bytes),
	}
}

// Classify answers each prompt with its most likely next token, in batched
// prefills without decoding. The context is checked before the call; a call
// that has started runs to its end.
func (m *Model) Classify(ctx context.Context, prompts []string, opts ...ClassifyOption) ([]ClassifyResult, BatchMetrics, error) {
	return m.classify(ctx, opts, func(h *C.gm_model, mem *cmem, o *C.gm_classify_options, r *C.gm_classify_result, bm *C.gm_batch_metrics) error {
		ps, err := mem.strs("prompts", prompts)
		if err != nil {
			return err
		}
		return call("gm_classify", func() bool { return C.gm_classify(h, ps, C.size_t(len(prompts)), o, r, bm) != C.GM_OK })
	})
}

// ClassifyTokens is Classify with prompts given as token ids (no labels).
func (m *Model) ClassifyTokens(ctx context.Context, prompts [][]uint32, opts ...ClassifyOption) ([]ClassifyResult, BatchMetrics, error) {
	return m.classify(ctx, opts, func(h *C.gm_model, mem *cmem, o *C.gm_classify_options, r *C.gm_classify_result, bm *C.gm_batch_metrics) error {
		p, lens := mem.ids(prompts)
		return call("gm_classify_tokens", func() bool {
			return C.gm_classify_tokens(h, p, lens, C.size_t(len(prompts)), o, r, bm) != C.GM_OK
		})
	})
}

func (m *Model) classify(ctx context.Context, opts []ClassifyOption, f func(*C.gm_model, *cmem, *C.gm_classify_options, *C.gm_classify_result, *C.gm_batch_metrics) error) ([]ClassifyResult, BatchMetrics, error) {
	if err := ctx.Err(); err != nil {
		return nil, BatchMetrics{}, err
	}
	var out []ClassifyResult
	var bmOut BatchMetrics
	err := m.with(func(h *C.gm_model) error {
		var mem cmem
		defer mem.free()
		o, _, err := classifyOptions(&mem, opts)
		if err != nil {
			return err
		}
		r := (*C.gm_classify_result)(mem.alloc(int(unsafe.Sizeof(C.gm_classify_result{}))))
		r.struct_size = C.size_t(unsafe.Sizeof(*r))
		bm := (*C.gm_batch_metrics)(mem.alloc(int(unsafe.Sizeof(C.gm_batch_metrics{}))))
		bm.struct_size = C.size_t(unsafe.Sizeof(*bm))
		if err := f(h, &mem, o, r, bm); err != nil {
			return err
		}
		defer C.gm_classify_result_free(r)
		n := int(r.n)
		out = make([]ClassifyResult, n)
		bmOut = batchMetrics(bm)
		if n == 0 {
			return nil
		}
		tokens := unsafe.Slice(r.tokens, n)
		texts := unsafe.Slice(r.texts, n)
		k, v := int(r.n_labels), int(r.n_logits)
		for i := range out {
			c := ClassifyResult{Token: uint32(tokens[i]), Text: C.GoString(texts[i]), Label: -1, Logprob: float32(nan())}
			if r.logprobs != nil {
				c.Logprob = float32(unsafe.Slice(r.logprobs, n)[i])
			}
			if r.labels != nil {
				c.Label = int(unsafe.Slice(r.labels, n)[i])
				c.LabelProbs = floats(unsafe.Slice(r.label_probs, n*k)[i*k : (i+1)*k])
			}
			if r.logits != nil {
				c.Logits = floats(unsafe.Slice(r.logits, n*v)[i*v : (i+1)*v])
			}
			out[i] = c
		}
		return nil
	})
	if err != nil {
		return nil, BatchMetrics{}, err
	}
	return out, bmOut, nil
}

func floats(src []C.float) []float32 {
	out := make([]float32, len(src))
	for i, v := range src {
		out[i] = float32(v)
	}
	return out
}

// BatchOutput is one prompt's result of BatchGenerate.
type BatchOutput struct {
	Text         string
	Tokens       []uint32
	FinishReason FinishReason
}

// BatchGenerate generates for several prompts together. The context is
// checked before the call; a call that has started runs to its end.
func (m *Model) BatchGenerate(ctx context.Context, prompts []string, opts ...GenerateOption) ([]BatchOutput, BatchMetrics, error) {
	return m.batch(ctx, opts, func(h *C.gm_model, mem *cmem, o *C.gm_generate_options, r *C.gm_batch_result, bm *C.gm_batch_metrics) (C.int32_t, error) {
		ps, err := mem.strs("prompts", prompts)
		if err != nil {
			return 0, err
		}
		var rc C.int32_t
		err = call("gm_batch_generate", func() bool { rc = C.gm_batch_generate(h, ps, C.size_t(len(prompts)), o, r, bm); return rc != C.GM_OK })
		return rc, err
	})
}

// BatchGenerateTokens is BatchGenerate with prompts given as token ids.
func (m *Model) BatchGenerateTokens(ctx context.Context, prompts [][]uint32, opts ...GenerateOption) ([]BatchOutput, BatchMetrics, error) {
	return m.batch(ctx, opts, func(h *C.gm_model, mem *cmem, o *C.gm_generate_options, r *C.gm_batch_result, bm *C.gm_batch_metrics) (C.int32_t, error) {
		p, lens := mem.ids(prompts)
		var rc C.int32_t
		err := call("gm_batch_generate_tokens", func() bool {
			rc = C.gm_batch_generate_tokens(h, p, lens, C.size_t(len(prompts)), o, r, bm)
			return rc != C.GM_OK
		})
		return rc, err
	})
}

func (m *Model) batch(ctx context.Context, opts []GenerateOption, f func(*C.gm_model, *cmem, *C.gm_generate_options, *C.gm_batch_result, *C.gm_batch_metrics) (C.int32_t, error)) ([]BatchOutput, BatchMetrics, error) {
	if err := ctx.Err(); err != nil {
		return nil, BatchMetrics{}, err
	}
	var out []BatchOutput
	var bmOut BatchMetrics
	err := m.withGen(opts, func(h *C.gm_model, mem *cmem, o *C.gm_generate_options) error {
		r := (*C.gm_batch_result)(mem.alloc(int(unsafe.Sizeof(C.gm_batch_result{}))))
		r.struct_size = C.size_t(unsafe.Sizeof(*r))
		bm := (*C.gm_batch_metrics)(mem.alloc(int(unsafe.Sizeof(C.gm_batch_metrics{}))))
		bm.struct_size = C.size_t(unsafe.Sizeof(*bm))
		if _, err := f(h, mem, o, r, bm); err != nil {
			return err
		}
		defer C.gm_batch_result_free(r)
		n := int(r.n)
		texts := unsafe.Slice(r.texts, n)
		offs := unsafe.Slice(r.token_offsets, n+1)
		reasons := unsafe.Slice(r.finish_reasons, n)
		var toks []C.uint32_t
		if r.tokens != nil {
			toks = unsafe.Slice(r.tokens, int(offs[n]))
		}
		out = make([]BatchOutput, n)
		for i := range out {
			ids := make([]uint32, 0, int(offs[i+1]-offs[i]))
			for _, t := range toks[offs[i]:offs[i+1]] {
				ids = append(ids, uint32(t))
			}
			out[i] = BatchOutput{Text: C.GoString(texts[i]), Tokens: ids, FinishReason: FinishReason(reasons[i])}
		}
		bmOut = batchMetrics(bm)
		return nil
	})
	if err != nil {
		return nil, BatchMetrics{}, err
	}
	return out, bmOut, nil
}
