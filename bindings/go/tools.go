package gomlx

/*
#include "gomlx.h"
*/
import "C"

import (
	"context"
	"encoding/json"
	"fmt"
	"unsafe"
)

// Structured output (constraints) and tool calls (docs/sampling.md).

// WithConstraint constrains the output with a constraint in its JSON form:
// {"json_schema": {...}}, "json_object", {"regex": "..."}, {"lark": "..."} or
// {"choice": ["a", "b"]}. A schema or grammar the engine cannot support fails
// the start (the stream's Err). WithJSONSchema, WithJSONObject, WithRegex,
// WithGrammar and WithChoice build it.
func WithConstraint(constraintJSON string) GenerateOption {
	return func(c *genConfig) { c.constraint = constraintJSON }
}

func withConstraintValue(kind string, v any) GenerateOption {
	return func(c *genConfig) {
		js, err := json.Marshal(map[string]any{kind: v})
		if err != nil {
			c.err = fmt.Errorf("gomlx: %s constraint: %w", kind, err)
			return
		}
		c.constraint = string(js)
	}
}

// WithJSONSchema makes the output JSON that validates against schema (a Go
// value that marshals to a JSON Schema object, or a json.RawMessage).
func WithJSONSchema(schema any) GenerateOption { return withConstraintValue("json_schema", schema) }

// WithJSONObject makes the output a JSON object.
func WithJSONObject() GenerateOption { return WithConstraint(`"json_object"`) }

// WithRegex makes the whole output match the regular expression (Rust regex syntax).
func WithRegex(re string) GenerateOption { return withConstraintValue("regex", re) }

// WithGrammar makes the output a sentence of the Lark grammar (llguidance's dialect).
func WithGrammar(lark string) GenerateOption { return withConstraintValue("lark", lark) }

// WithChoice makes the output exactly one of the options.
func WithChoice(options ...string) GenerateOption { return withConstraintValue("choice", options) }

// Tool is a function the model may call, in OpenAI's shape.
type Tool struct {
	Type     string       `json:"type"` // "function" (the default when empty)
	Function ToolFunction `json:"function"`
}

// ToolFunction describes a callable function.
type ToolFunction struct {
	Name        string `json:"name"`
	Description string `json:"description,omitempty"`
	// A JSON Schema object. The template prints it as it marshals: a Go map's
	// keys come out sorted; a json.RawMessage keeps its order.
	Parameters any `json:"parameters,omitempty"`
}

// ToolCall is one call the model made (or, in an assistant Message, one it
// made earlier). Arguments is a JSON object.
type ToolCall struct {
	ID       string           `json:"id"`
	Type     string           `json:"type"` // "function"
	Function ToolCallFunction `json:"function"`
}

// ToolCallFunction names the function called and its arguments.
type ToolCallFunction struct {
	Name      string          `json:"name"`
	Arguments json.RawMessage `json:"arguments"`
}

// WithTools shows the tools to the model's chat template (Chat only); the
// reply's calls come back parsed in Token.ToolCalls (and its Text carries only
// the text outside calls).
func WithTools(tools ...Tool) GenerateOption {
	return func(c *genConfig) {
		for i := range tools {
			if tools[i].Type == "" {
				tools[i].Type = "function"
			}
		}
		js, err := json.Marshal(tools)
		if err != nil {
			c.err = fmt.Errorf("gomlx: tools: %w", err)
			return
		}
		c.tools = string(js)
	}
}

// WithToolChoice is "auto" (the default), "none" (the tools are not shown)
// or "required" (one call of one of the tools, forced by a grammar).
func WithToolChoice(choice string) GenerateOption {
	return func(c *genConfig) { c.toolChoice = choice }
}

// WithToolChoiceFunction forces a call of the named function.
func WithToolChoiceFunction(name string) GenerateOption {
	return func(c *genConfig) {
		js, _ := json.Marshal(map[string]any{"type": "function", "function": map[string]string{"name": name}})
		c.toolChoice = string(js)
	}
}

// jsonMessage is a Message as gm_chat_start_json reads it.
type jsonMessage struct {
	Role       string     `json:"role"`
	Content    string     `json:"content"`
	ToolCalls  []ToolCall `json:"tool_calls,omitempty"`
	ToolCallID string     `json:"tool_call_id,omitempty"`
	Name       string     `json:"name,omitempty"`
}

// needsJSON tells whether msgs carry more than a role and content.
func needsJSON(msgs []Message) bool {
	for _, m := range msgs {
		if len(m.ToolCalls) > 0 || m.ToolCallID != "" || m.Name != "" {
			return true
		}
	}
	return false
}

func messagesJSON(mem *cmem, msgs []Message) (*C.char, error) {
	out := make([]jsonMessage, len(msgs))
	for i, m := range msgs {
		out[i] = jsonMessage{Role: m.Role, Content: m.Content, ToolCalls: m.ToolCalls, ToolCallID: m.ToolCallID, Name: m.Name}
	}
	js, err := json.Marshal(out)
	if err != nil {
		return nil, fmt.Errorf("gomlx: messages: %w", err)
	}
	return mem.str("messages", string(js))
}

// parseToolCalls reads gm_token.tool_calls.
func parseToolCalls(p *C.char) ([]ToolCall, error) {
	if p == nil {
		return nil, nil
	}
	var calls []ToolCall
	if err := json.Unmarshal([]byte(C.GoString(p)), &calls); err != nil {
		return nil, fmt.Errorf("gomlx: tool calls: %w", err)
	}
	return calls, nil
}

// RenderChat returns the prompt Chat would start from: msgs rendered with the
// model's chat template and the options' tools and template arguments.
func (m *Model) RenderChat(msgs []Message, opts ...GenerateOption) (string, error) {
	var out string
	err := m.withGen(opts, func(h *C.gm_model, mem *cmem, o *C.gm_generate_options) error {
		cm, err := messagesJSON(mem, msgs)
		if err != nil {
			return err
		}
		var n C.int64_t
		if err := call("gm_chat_render_json", func() bool { n = C.gm_chat_render_json(h, cm, o, nil, 0); return n < 0 }); err != nil {
			return err
		}
		buf := (*C.char)(mem.alloc(int(n) + 1))
		var again C.int64_t
		if err := call("gm_chat_render_json", func() bool { again = C.gm_chat_render_json(h, cm, o, buf, C.size_t(n)+1); return again < 0 }); err != nil {
			return err
		}
		out = C.GoStringN(buf, C.int(again))
		return nil
	})
	return out, err
}

// chatJSON starts a chat through gm_chat_start_json.
func (m *Model) chatJSON(ctx context.Context, msgs []Message, opts []GenerateOption) *Stream {
	return m.start(ctx, opts, "gm_chat_start_json", func(h *C.gm_model, mem *cmem, o *C.gm_generate_options) (*C.gm_generation, error) {
		cm, err := messagesJSON(mem, msgs)
		if err != nil {
			return nil, err
		}
		var g *C.gm_generation
		err = call("gm_chat_start_json", func() bool { g = C.gm_chat_start_json(h, cm, o); return g == nil })
		return g, err
	})
}

// ClassifyChoice answers each prompt with one of labels, generated whole under
// a choice constraint (greedy unless the options sample): unlike Classify
// WithLabels, labels may share their first tokens. Returns each prompt's label
// index. The context is checked before the call; a started call runs to its end.
func (m *Model) ClassifyChoice(ctx context.Context, prompts, labels []string, opts ...GenerateOption) ([]int, BatchMetrics, error) {
	if err := ctx.Err(); err != nil {
		return nil, BatchMetrics{}, err
	}
	var out []int
	var bmOut BatchMetrics
	err := m.withGen(opts, func(h *C.gm_model, mem *cmem, o *C.gm_generate_options) error {
		ps, err := mem.strs("prompts", prompts)
		if err != nil {
			return err
		}
		ls, err := mem.strs("labels", labels)
		if err != nil {
			return err
		}
		picks := unsafe.Slice((*C.int32_t)(mem.alloc(len(prompts)*4)), len(prompts))
		var bm C.gm_batch_metrics
		bm.struct_size = C.size_t(unsafe.Sizeof(bm))
		var first *C.int32_t
		if len(prompts) > 0 {
			first = &picks[0]
		}
		if err := call("gm_classify_choice", func() bool {
			return C.gm_classify_choice(h, ps, C.size_t(len(prompts)), ls, C.size_t(len(labels)), o, first, &bm) != C.GM_OK
		}); err != nil {
			return err
		}
		for _, p := range picks {
			out = append(out, int(p))
		}
		bmOut = batchMetrics(&bm)
		return nil
	})
	return out, bmOut, err
}
