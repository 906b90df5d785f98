package gomlx

/*
#include "gomlx.h"
*/
import "C"

import (
	"context"
	"errors"
	"iter"
	"runtime"
	"strings"
	"sync"
	"time"
	"unsafe"
)

// NoToken is the ID of a final text-only piece: text the engine held back
// (for a possible stop string or an incomplete character) and released at
// the end.
const NoToken = uint32(C.GM_NO_TOKEN)

// Token is one generated token.
type Token struct {
	ID          uint32  // NoToken for a final text-only piece
	Text        string  // text this token adds (may be empty while bytes are held back)
	Logprob     float32 // NaN unless WithLogprobs
	TopLogprobs []TopLogprob
	// ToolCalls are the calls this token completed (a Chat WithTools); Text
	// then carries only the text outside calls.
	ToolCalls []ToolCall
}

// TopLogprob is one likely alternative token.
type TopLogprob struct {
	ID      uint32
	Logprob float32
}

// FinishReason tells why a generation ended.
type FinishReason int

const (
	FinishNone      FinishReason = C.GM_FINISH_NONE // still running
	FinishEOS       FinishReason = C.GM_FINISH_EOS
	FinishLength    FinishReason = C.GM_FINISH_LENGTH
	FinishStop      FinishReason = C.GM_FINISH_STOP
	FinishCancelled FinishReason = C.GM_FINISH_CANCELLED
	FinishError     FinishReason = C.GM_FINISH_ERROR
)

func (r FinishReason) String() string {
	switch r {
	case FinishEOS:
		return "eos"
	case FinishLength:
		return "length"
	case FinishStop:
		return "stop"
	case FinishCancelled:
		return "cancelled"
	case FinishError:
		return "error"
	}
	return "none"
}

// Metrics tells how a generation went.
type Metrics struct {
	FinishReason          FinishReason
	PromptTokens          int
	PromptTokensEvaluated int // fewer than PromptTokens when a session's cache was reused
	GeneratedTokens       int // counts an end-of-sequence token, which is not yielded
	TimeToFirstToken      time.Duration
	Prefill               time.Duration
	PrefillTokensPerSec   float64
	Decode                time.Duration
	DecodeTokensPerSec    float64
	PeakMemoryBytes       uint64
	ActiveMemoryBytes     uint64
	BatchRowsMax          int // the most streams that decoded in one step with this one
}

func seconds(s C.double) time.Duration { return time.Duration(float64(s) * float64(time.Second)) }

// Stream is one running generation. Range over Tokens() once (from one
// goroutine); then Err, FinishReason and Metrics tell how it ended. Cancel
// (or cancelling the context, or breaking out of the loop) stops it. Streams
// of one model may be consumed concurrently from different goroutines.
type Stream struct {
	hmu     sync.RWMutex // read: a C call on g; write: freeing g
	g       *C.gm_generation
	owner   any // keeps the Model or Session reachable while the stream lives
	ctx     context.Context
	stopCtx func() bool
	cleanup runtime.Cleanup

	mu      sync.Mutex
	used    bool
	err     error
	reason  FinishReason
	metrics *Metrics
}

func failed(err error) *Stream { return &Stream{err: err, reason: FinishError, used: false} }

func newStream(ctx context.Context, g *C.gm_generation, owner any) *Stream {
	s := &Stream{g: g, owner: owner, ctx: ctx}
	s.cleanup = runtime.AddCleanup(s, func(g *C.gm_generation) { C.gm_generation_free(g) }, g)
	s.stopCtx = context.AfterFunc(ctx, s.Cancel)
	return s
}

// Cancel stops the generation within one engine step. Safe from any goroutine.
func (s *Stream) Cancel() {
	s.hmu.RLock()
	defer s.hmu.RUnlock()
	if s.g != nil {
		C.gm_generation_cancel(s.g)
	}
}

// free releases the C generation (cancelling it if it still runs).
func (s *Stream) free() {
	if s.stopCtx != nil {
		s.stopCtx()
	}
	s.hmu.Lock()
	defer s.hmu.Unlock()
	if s.g != nil {
		s.cleanup.Stop()
		C.gm_generation_free(s.g)
		s.g = nil
	}
}

// Close stops the generation and frees it; a no-op after Tokens finished.
func (s *Stream) Close() {
	s.Cancel()
	s.free()
}

// Tokens yields the generated tokens as they are made. It may be ranged
// over once; later calls yield nothing. Breaking out of the loop cancels and
// frees the generation.
func (s *Stream) Tokens() iter.Seq[Token] {
	return func(yield func(Token) bool) {
		s.mu.Lock()
		if s.used || s.g == nil {
			s.mu.Unlock()
			return
		}
		s.used = true
		s.mu.Unlock()
		defer s.free()
		for {
			t, ok, err := s.next()
			if err != nil {
				s.finish(FinishError, nil, err)
				return
			}
			if !ok {
				s.finishOK()
				return
			}
			if !yield(t) {
				s.Cancel()
				s.finish(FinishCancelled, nil, nil)
				return
			}
		}
	}
}

func (s *Stream) next() (Token, bool, error) {
	s.hmu.RLock()
	defer s.hmu.RUnlock()
	var ct C.gm_token
	ct.struct_size = C.size_t(unsafe.Sizeof(ct))
	var rc C.int32_t
	err := call("gm_generate_next", func() bool { rc = C.gm_generate_next(s.g, &ct); return rc < 0 })
	if err != nil || rc == 0 {
		return Token{}, false, err
	}
	t := Token{ID: uint32(ct.id), Text: C.GoStringN(ct.text, C.int(ct.text_len)), Logprob: float32(ct.logprob)}
	if t.ToolCalls, err = parseToolCalls(ct.tool_calls); err != nil {
		return Token{}, false, err
	}
	if ct.n_top_logprobs > 0 {
		for _, a := range unsafe.Slice(ct.top_logprobs, int(ct.n_top_logprobs)) {
			t.TopLogprobs = append(t.TopLogprobs, TopLogprob{uint32(a.id), float32(a.logprob)})
		}
	}
	return t, true, nil
}

func (s *Stream) finishOK() {
	s.hmu.RLock()
	var cm C.gm_metrics
	cm.struct_size = C.size_t(unsafe.Sizeof(cm))
	err := call("gm_generation_metrics", func() bool { return C.gm_generation_metrics(s.g, &cm) != C.GM_OK })
	s.hmu.RUnlock()
	if err != nil {
		s.finish(FinishError, nil, err)
		return
	}
	m := &Metrics{
		FinishReason: FinishReason(cm.finish_reason), PromptTokens: int(cm.prompt_tokens),
		PromptTokensEvaluated: int(cm.prompt_tokens_evaluated), GeneratedTokens: int(cm.generated_tokens),
		TimeToFirstToken: seconds(cm.time_to_first_token_s), Prefill: seconds(cm.prefill_s),
		PrefillTokensPerSec: float64(cm.prefill_tokens_per_s), Decode: seconds(cm.decode_s),
		DecodeTokensPerSec: float64(cm.decode_tokens_per_s), PeakMemoryBytes: uint64(cm.peak_memory_bytes),
		ActiveMemoryBytes: uint64(cm.active_memory_bytes),
		BatchRowsMax:      int(cm.batch_rows_max),
	}
	var err2 error
	if m.FinishReason == FinishCancelled && s.ctx != nil {
		err2 = s.ctx.Err()
	}
	s.finish(m.FinishReason, m, err2)
}

func (s *Stream) finish(r FinishReason, m *Metrics, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.reason, s.metrics, s.err = r, m, err
}

// Err is nil after a normal end (end of sequence, length, stop string, an
// explicit Cancel or break); the context's error when the context was
// cancelled; otherwise the error that ended or prevented the generation.
func (s *Stream) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// FinishReason tells why the stream ended (FinishNone before the end).
func (s *Stream) FinishReason() FinishReason {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.reason
}

// Metrics tells how the generation went; available after a normal end.
func (s *Stream) Metrics() (Metrics, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.metrics == nil {
		if s.err != nil {
			return Metrics{}, s.err
		}
		return Metrics{}, errors.New("gomlx: the stream has not finished")
	}
	return *s.metrics, nil
}

// Text drains the stream and returns the whole text and the token ids
// (text-only pieces add text, not ids), with Err.
func (s *Stream) Text() (string, []uint32, error) {
	var b strings.Builder
	var ids []uint32
	for t := range s.Tokens() {
		b.WriteString(t.Text)
		if t.ID != NoToken {
			ids = append(ids, t.ID)
		}
	}
	return b.String(), ids, s.Err()
}
