// Command ollama-client streams a chat from a gomlx server through Ollama's own
// Go client (github.com/ollama/ollama/api), unchanged, and checks the answer; then
// structured output (Format: a JSON schema, and "json") and, against TOOLS_URL (the
// same model served with a chat template that renders tools), Tools: a call forced
// through gomlx's options.tool_choice, its result sent back, an answer.
//
//	OLLAMA_HOST=http://127.0.0.1:8090 go run . MODEL [TOOLS_URL]
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/ollama/ollama/api"
)

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "ollama-client: "+format+"\n", args...)
	os.Exit(1)
}

func main() {
	if len(os.Args) != 2 && len(os.Args) != 3 {
		fail("usage: ollama-client MODEL [TOOLS_URL] (server from OLLAMA_HOST)")
	}
	model := os.Args[1]
	client, err := api.ClientFromEnvironment()
	if err != nil {
		fail("client: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	if _, err := client.Version(ctx); err != nil {
		fail("version: %v", err)
	}
	list, err := client.List(ctx)
	if err != nil {
		fail("list: %v", err)
	}
	found := false
	for _, m := range list.Models {
		found = found || m.Name == model
	}
	if !found {
		fail("list: %s is not among %d models", model, len(list.Models))
	}

	stream := true
	req := &api.ChatRequest{
		Model:    model,
		Messages: []api.Message{{Role: "user", Content: "What is the capital of France?"}},
		Stream:   &stream,
		Options:  map[string]any{"temperature": 0, "num_predict": 24},
	}
	var text strings.Builder
	chunks := 0
	var last api.ChatResponse
	err = client.Chat(ctx, req, func(r api.ChatResponse) error {
		text.WriteString(r.Message.Content)
		chunks++
		last = r
		return nil
	})
	if err != nil {
		fail("chat: %v", err)
	}
	if !last.Done || last.EvalCount < 1 || last.PromptEvalCount < 1 || last.CreatedAt.IsZero() {
		fail("chat: the last response is not a finished one: %+v", last)
	}
	if chunks < 3 || !strings.Contains(text.String(), "Paris") {
		fail("chat: %d chunks, answer %q", chunks, text.String())
	}

	// A bad request comes back as the client's StatusError.
	err = client.Chat(ctx, &api.ChatRequest{Model: "no-such-model", Messages: req.Messages}, func(api.ChatResponse) error { return nil })
	if se, ok := err.(api.StatusError); !ok || se.StatusCode != 404 {
		fail("chat with an unknown model: want a 404 StatusError, got %v", err)
	}
	fmt.Printf("ollama Go client: %d chunks, %d tokens: %q\n", chunks, last.EvalCount, text.String())

	structured(ctx, client, model)
	if len(os.Args) == 3 {
		u, err := url.Parse(os.Args[2])
		if err != nil {
			fail("tools url: %v", err)
		}
		tools(ctx, api.NewClient(u, http.DefaultClient), model)
	}
}

// city is what the schema allows, and nothing else.
type city struct {
	Name    string `json:"name"`
	Country string `json:"country"`
	Sunny   *bool  `json:"sunny"`
}

func structured(ctx context.Context, client *api.Client, model string) {
	schema := json.RawMessage(`{"type": "object", "properties": {"name": {"type": "string", "maxLength": 20},
		"country": {"enum": ["France", "Germany", "Italy"]}, "sunny": {"type": "boolean"}},
		"required": ["name", "country", "sunny"], "additionalProperties": false}`)
	var out strings.Builder
	stream := true
	req := &api.ChatRequest{
		Model:    model,
		Messages: []api.Message{{Role: "user", Content: "Describe a city."}},
		Stream:   &stream,
		Format:   schema,
		Options:  map[string]any{"temperature": 0.8, "seed": 3, "num_predict": 120},
	}
	var last api.ChatResponse
	if err := client.Chat(ctx, req, func(r api.ChatResponse) error { out.WriteString(r.Message.Content); last = r; return nil }); err != nil {
		fail("chat with Format: %v", err)
	}
	dec := json.NewDecoder(bytes.NewReader([]byte(out.String())))
	dec.DisallowUnknownFields()
	var c city
	if err := dec.Decode(&c); err != nil || c.Sunny == nil || len([]rune(c.Name)) > 20 || !strings.Contains("France Germany Italy", c.Country) || c.Country == "" {
		fail("chat with Format: %q does not validate (%v, %+v)", out.String(), err, c)
	}
	if last.DoneReason != "stop" {
		fail("chat with Format: done_reason %q, want stop (the grammar's end)", last.DoneReason)
	}
	// Format "json" on /api/generate.
	stream = false
	var resp api.GenerateResponse
	greq := &api.GenerateRequest{Model: model, Prompt: "Describe a city as JSON.", Stream: &stream, Format: json.RawMessage(`"json"`),
		Options: map[string]any{"temperature": 0, "num_predict": 120}}
	if err := client.Generate(ctx, greq, func(r api.GenerateResponse) error { resp = r; return nil }); err != nil {
		fail("generate with Format json: %v", err)
	}
	if resp.DoneReason == "stop" {
		var obj map[string]any
		if err := json.Unmarshal([]byte(resp.Response), &obj); err != nil {
			fail("generate with Format json: %q is not a JSON object: %v", resp.Response, err)
		}
	} else if !strings.HasPrefix(resp.Response, "{") {
		fail("generate with Format json: %q", resp.Response)
	}
	fmt.Printf("ollama Go client: Format schema %s and Format json: ok\n", out.String())
}

func tools(ctx context.Context, client *api.Client, model string) {
	var params api.ToolFunctionParameters
	if err := json.Unmarshal([]byte(`{"type": "object", "required": ["city"],
		"properties": {"city": {"type": "string", "description": "The city"}}}`), &params); err != nil {
		fail("tool parameters: %v", err)
	}
	tool := api.Tool{Type: "function", Function: api.ToolFunction{Name: "get_weather", Description: "The current weather in a city", Parameters: params}}
	msgs := []api.Message{{Role: "user", Content: "What is the weather in Paris?"}}
	stream := true
	// gomlx's extension: options.tool_choice (OpenAI's values) forces the call.
	req := &api.ChatRequest{Model: model, Messages: msgs, Stream: &stream, Tools: api.Tools{tool},
		Options: map[string]any{"temperature": 0.8, "seed": 1, "num_predict": 120, "tool_choice": "required"}}
	var calls []api.ToolCall
	var content strings.Builder
	if err := client.Chat(ctx, req, func(r api.ChatResponse) error {
		calls = append(calls, r.Message.ToolCalls...)
		content.WriteString(r.Message.Content)
		return nil
	}); err != nil {
		fail("chat with Tools: %v", err)
	}
	if len(calls) != 1 || calls[0].Function.Name != "get_weather" {
		fail("chat with Tools: want one get_weather call, got %+v (text %q)", calls, content.String())
	}
	cityArg, ok := calls[0].Function.Arguments.Get("city")
	if s, isStr := cityArg.(string); !ok || !isStr || s == "" || calls[0].Function.Arguments.Len() != 1 {
		fail("chat with Tools: arguments %v do not match the parameters", calls[0].Function.Arguments)
	}
	// The call and its result go back; the model answers in text.
	msgs = append(msgs, api.Message{Role: "assistant", ToolCalls: calls}, api.Message{Role: "tool", ToolName: "get_weather", Content: `{"sky": "sunny", "celsius": 24}`})
	stream = false
	var answer api.ChatResponse
	req = &api.ChatRequest{Model: model, Messages: msgs, Stream: &stream, Tools: api.Tools{tool}, Options: map[string]any{"temperature": 0, "num_predict": 32}}
	if err := client.Chat(ctx, req, func(r api.ChatResponse) error { answer = r; return nil }); err != nil {
		fail("chat with a tool result: %v", err)
	}
	if !answer.Done || answer.PromptEvalCount < 1 {
		fail("chat with a tool result: %+v", answer)
	}
	args, _ := json.Marshal(calls[0].Function.Arguments)
	fmt.Printf("ollama Go client: Tools: call get_weather(%s), answer %q: ok\n", args, answer.Message.Content)
}
