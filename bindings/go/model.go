package gomlx

/*
#include "gomlx.h"
*/
import "C"

import (
	"context"
	"runtime"
	"sync"
	"unsafe"
)

// Model is a loaded model. Safe for concurrent use; Close it when done.
type Model struct {
	mu      sync.RWMutex // held (read) during each C call on h; Close takes it to write
	h       *C.gm_model
	info    Info
	cleanup runtime.Cleanup
}

// Info describes a loaded model.
type Info struct {
	Architecture   string // "llama", "qwen3", "gemma3_text", ...
	VocabSize      int
	NumLayers      int
	HiddenSize     int
	NumHeads       int
	NumKVHeads     int
	HeadDim        int
	ContextLength  int // longest prompt + output of one request
	SlidingWindow  int // 0 = none
	DType          string
	QuantBits      int // 0 = not quantised
	QuantGroupSize int
	Parameters     uint64
	WeightBytes    uint64
	Device         string // "cpu" or "gpu"
	HasTokenizer   bool
}

// LoadModel loads a model directory (config.json + safetensors, tokenizer
// optional) or a .gguf file.
func LoadModel(path string, opts ...LoadOption) (*Model, error) {
	var m cmem
	defer m.free()
	cpath, err := m.str("path", path)
	if err != nil {
		return nil, err
	}
	co, err := loadOptions(&m, opts)
	if err != nil {
		return nil, err
	}
	var h *C.gm_model
	if err := call("gm_model_load", func() bool { h = C.gm_model_load(cpath, co); return h == nil }); err != nil {
		return nil, err
	}
	var ci C.gm_info
	ci.struct_size = C.size_t(unsafe.Sizeof(ci))
	if err := call("gm_model_info", func() bool { return C.gm_model_info(h, &ci) != C.GM_OK }); err != nil {
		C.gm_model_close(h)
		return nil, err
	}
	model := &Model{h: h, info: Info{
		Architecture: C.GoString(ci.architecture), VocabSize: int(ci.vocab_size), NumLayers: int(ci.num_layers),
		HiddenSize: int(ci.hidden_size), NumHeads: int(ci.num_heads), NumKVHeads: int(ci.num_kv_heads),
		HeadDim: int(ci.head_dim), ContextLength: int(ci.context_length), SlidingWindow: int(ci.sliding_window),
		DType: C.GoString(ci.dtype), QuantBits: int(ci.quant_bits), QuantGroupSize: int(ci.quant_group_size),
		Parameters: uint64(ci.parameters), WeightBytes: uint64(ci.weight_bytes), Device: C.GoString(ci.device),
		HasTokenizer: bool(ci.has_tokenizer),
	}}
	// Safety net only: an unreachable, unclosed model is closed by the GC.
	model.cleanup = runtime.AddCleanup(model, func(h *C.gm_model) { C.gm_model_close(h) }, h)
	return model, nil
}

// Info describes the model (also after Close).
func (m *Model) Info() Info { return m.info }

// Close cancels the model's running generations (their streams end with an
// error), waits for running Classify/BatchGenerate calls, and frees the
// weights. Calls after Close return ErrClosed. Close is idempotent.
func (m *Model) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.h == nil {
		return nil
	}
	m.cleanup.Stop()
	h := m.h
	m.h = nil
	return call("gm_model_close", func() bool { C.gm_model_close(h); return C.gm_last_error() != nil })
}

// with runs f with the live handle under the read lock.
func (m *Model) with(f func(h *C.gm_model) error) error {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.h == nil {
		return ErrClosed
	}
	return f(m.h)
}

// withGen is with plus the generate options marshalled into mem, which lives
// until f returns.
func (m *Model) withGen(opts []GenerateOption, f func(h *C.gm_model, mem *cmem, o *C.gm_generate_options) error) error {
	return m.with(func(h *C.gm_model) error {
		var mem cmem
		defer mem.free()
		o, err := genOptions(&mem, opts)
		if err != nil {
			return err
		}
		return f(h, &mem, o)
	})
}

// Generate streams a continuation of a text prompt. The returned stream is
// never nil; a failure to start is reported by its Err.
func (m *Model) Generate(ctx context.Context, prompt string, opts ...GenerateOption) *Stream {
	return m.start(ctx, opts, "gm_generate_start", func(h *C.gm_model, mem *cmem, o *C.gm_generate_options) (*C.gm_generation, error) {
		cp, err := mem.str("prompt", prompt)
		if err != nil {
			return nil, err
		}
		var g *C.gm_generation
		err = call("gm_generate_start", func() bool { g = C.gm_generate_start(h, cp, o); return g == nil })
		return g, err
	})
}

// GenerateTokens streams a continuation of a prompt given as token ids
// (works for models without a tokenizer; token text is then empty).
func (m *Model) GenerateTokens(ctx context.Context, ids []uint32, opts ...GenerateOption) *Stream {
	return m.start(ctx, opts, "gm_generate_tokens_start", func(h *C.gm_model, mem *cmem, o *C.gm_generate_options) (*C.gm_generation, error) {
		p, lens := mem.ids([][]uint32{ids})
		var g *C.gm_generation
		err := call("gm_generate_tokens_start", func() bool {
			g = C.gm_generate_tokens_start(h, *p, *lens, o)
			return g == nil
		})
		return g, err
	})
}

// Message is one chat message. An assistant message may carry the calls it
// made (ToolCalls, as Token.ToolCalls hands them out); a "tool" message the
// result of one (ToolCallID and Name of the call, the result in Content).
type Message struct {
	Role       string // "system", "user", "assistant", "tool"
	Content    string
	ToolCalls  []ToolCall
	ToolCallID string
	Name       string
}

func messages(mem *cmem, msgs []Message) (*C.gm_message, C.size_t, error) {
	if len(msgs) == 0 {
		return nil, 0, nil
	}
	arr := unsafe.Slice((*C.gm_message)(mem.alloc(len(msgs)*int(unsafe.Sizeof(C.gm_message{})))), len(msgs))
	for i, msg := range msgs {
		var err error
		if arr[i].role, err = mem.str("message role", msg.Role); err != nil {
			return nil, 0, err
		}
		if arr[i].content, err = mem.str("message content", msg.Content); err != nil {
			return nil, 0, err
		}
	}
	return &arr[0], C.size_t(len(msgs)), nil
}

// Chat streams the assistant's reply to msgs, rendered with the model's own
// chat template.
func (m *Model) Chat(ctx context.Context, msgs []Message, opts ...GenerateOption) *Stream {
	if needsJSON(msgs) {
		return m.chatJSON(ctx, msgs, opts)
	}
	return m.start(ctx, opts, "gm_chat_start", func(h *C.gm_model, mem *cmem, o *C.gm_generate_options) (*C.gm_generation, error) {
		cm, n, err := messages(mem, msgs)
		if err != nil {
			return nil, err
		}
		var g *C.gm_generation
		err = call("gm_chat_start", func() bool { g = C.gm_chat_start(h, cm, n, o); return g == nil })
		return g, err
	})
}

func (m *Model) start(ctx context.Context, opts []GenerateOption, op string, f func(*C.gm_model, *cmem, *C.gm_generate_options) (*C.gm_generation, error)) *Stream {
	if err := ctx.Err(); err != nil {
		return failed(err)
	}
	var g *C.gm_generation
	err := m.withGen(opts, func(h *C.gm_model, mem *cmem, o *C.gm_generate_options) error {
		var err error
		g, err = f(h, mem, o)
		return err
	})
	if err != nil {
		return failed(err)
	}
	return newStream(ctx, g, m)
}

// Session is a conversation whose KV cache the engine keeps between turns:
// pass the whole conversation to each Chat; only the new tokens are evaluated.
// One generation at a time per session. Close it when done.
type Session struct {
	mu      sync.RWMutex
	h       *C.gm_session
	model   *Model
	cleanup runtime.Cleanup
}

// NewSession starts a chat session on the model.
func (m *Model) NewSession() (*Session, error) {
	var s *C.gm_session
	err := m.with(func(h *C.gm_model) error {
		return call("gm_session_new", func() bool { s = C.gm_session_new(h); return s == nil })
	})
	if err != nil {
		return nil, err
	}
	sess := &Session{h: s, model: m}
	sess.cleanup = runtime.AddCleanup(sess, func(h *C.gm_session) { C.gm_session_free(h) }, s)
	return sess, nil
}

// Chat streams the reply to the conversation msgs through the session's cache.
func (s *Session) Chat(ctx context.Context, msgs []Message, opts ...GenerateOption) *Stream {
	if err := ctx.Err(); err != nil {
		return failed(err)
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.h == nil {
		return failed(ErrClosed)
	}
	var mem cmem
	defer mem.free()
	o, err := genOptions(&mem, opts)
	if err != nil {
		return failed(err)
	}
	var g *C.gm_generation
	if needsJSON(msgs) {
		cm, err := messagesJSON(&mem, msgs)
		if err != nil {
			return failed(err)
		}
		if err := call("gm_session_chat_start_json", func() bool { g = C.gm_session_chat_start_json(s.h, cm, o); return g == nil }); err != nil {
			return failed(err)
		}
		return newStream(ctx, g, s)
	}
	cm, n, err := messages(&mem, msgs)
	if err != nil {
		return failed(err)
	}
	if err := call("gm_session_chat_start", func() bool { g = C.gm_session_chat_start(s.h, cm, n, o); return g == nil }); err != nil {
		return failed(err)
	}
	return newStream(ctx, g, s)
}

// Close frees the session and its cache. Idempotent.
func (s *Session) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.h == nil {
		return nil
	}
	s.cleanup.Stop()
	C.gm_session_free(s.h)
	s.h = nil
	return nil
}
