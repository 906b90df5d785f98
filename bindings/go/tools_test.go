package gomlx

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
)

// The qwen3_qknorm random-weight fixture with a byte-level tokenizer and Qwen 3's
// chat template (scripts/text-oracle/make_tool_fixture.py); tool_reference.json
// holds transformers' renders of the conversations below.
var toolModelPath = filepath.Join(root, "tests", "fixtures", "tools", "qwen3_bytes")

type toolReference struct {
	RawTools []struct {
		Type     string `json:"type"`
		Function struct {
			Name        string          `json:"name"`
			Description string          `json:"description"`
			Parameters  json.RawMessage `json:"parameters"`
		} `json:"function"`
	} `json:"tools"`
	Tools             []Tool          `json:"-"`
	FirstRendered     string          `json:"first_rendered"`
	Call              json.RawMessage `json:"call"`
	RoundTripRendered string          `json:"round_trip_rendered"`
}

var (
	toolOnce  sync.Once
	toolModel *Model
	toolErr   error
)

func toolFixture(t *testing.T) (*Model, toolReference) {
	t.Helper()
	toolOnce.Do(func() { toolModel, toolErr = LoadModel(toolModelPath, WithDevice(DeviceCPU)) })
	if toolErr != nil {
		t.Fatal(toolErr)
	}
	raw, err := os.ReadFile(filepath.Join(toolModelPath, "tool_reference.json"))
	if err != nil {
		t.Fatal(err)
	}
	var ref toolReference
	if err := json.Unmarshal(raw, &ref); err != nil {
		t.Fatal(err)
	}
	// Parameters stay raw JSON: the template prints them in their own key order.
	for _, rt := range ref.RawTools {
		ref.Tools = append(ref.Tools, Tool{Type: rt.Type, Function: ToolFunction{Name: rt.Function.Name, Description: rt.Function.Description, Parameters: rt.Function.Parameters}})
	}
	return toolModel, ref
}

// person is the schema's shape; validate checks what json.Unmarshal cannot.
type person struct {
	Name *string  `json:"name"`
	Age  *int     `json:"age"`
	Tags []string `json:"tags"`
}

var personSchema = map[string]any{
	"type": "object",
	"properties": map[string]any{
		"name": map[string]any{"type": "string", "pattern": "^[a-z]{1,6}$"},
		"age":  map[string]any{"type": "integer", "minimum": 0, "maximum": 120},
		"tags": map[string]any{"type": "array", "items": map[string]any{"enum": []string{"red", "green"}}, "maxItems": 3},
	},
	"required":             []string{"name", "age"},
	"additionalProperties": false,
}

func validatePerson(text string) string {
	dec := json.NewDecoder(strings.NewReader(text))
	dec.DisallowUnknownFields()
	var p person
	if err := dec.Decode(&p); err != nil {
		return "not the schema's JSON: " + err.Error()
	}
	if dec.More() {
		return "text after the object"
	}
	switch {
	case p.Name == nil || p.Age == nil:
		return "a required field is missing"
	case len(*p.Name) < 1 || len(*p.Name) > 6 || strings.Trim(*p.Name, "abcdefghijklmnopqrstuvwxyz") != "":
		return "name does not match ^[a-z]{1,6}$"
	case *p.Age < 0 || *p.Age > 120:
		return "age out of [0, 120]"
	case len(p.Tags) > 3:
		return "more than 3 tags"
	}
	for _, tag := range p.Tags {
		if tag != "red" && tag != "green" {
			return "tag " + tag + " is not in the enum"
		}
	}
	return ""
}

func TestJSONSchemaConstraint(t *testing.T) {
	m, _ := toolFixture(t)
	ctx := context.Background()
	for seed := uint64(1); seed <= 24; seed++ {
		text, _, err := m.Generate(ctx, "Person: ", WithJSONSchema(personSchema), WithTemperature(1), WithSeed(seed), WithMaxTokens(120)).Text()
		if err != nil {
			t.Fatal(err)
		}
		if why := validatePerson(text); why != "" {
			t.Errorf("seed %d: %q: %s", seed, text, why)
		}
	}
	// Unconstrained, the random model's output is not such JSON (the check can fail).
	text, _, err := m.Generate(ctx, "Person: ", WithTemperature(1), WithSeed(1), WithMaxTokens(40)).Text()
	if err != nil {
		t.Fatal(err)
	}
	if validatePerson(text) == "" {
		t.Errorf("unconstrained output %q validates", text)
	}
	// Choice and regex.
	for seed := uint64(1); seed <= 8; seed++ {
		text, _, err := m.Generate(ctx, "Mood: ", WithChoice("happy", "sad", "hungry"), WithTemperature(1), WithSeed(seed)).Text()
		if err != nil || (text != "happy" && text != "sad" && text != "hungry") {
			t.Errorf("choice: %q %v", text, err)
		}
		text, _, err = m.Generate(ctx, "Code: ", WithRegex("[A-F]{3}-[0-9]{2}"), WithTemperature(1), WithSeed(seed)).Text()
		if err != nil || len(text) != 6 || strings.Trim(text[:3], "ABCDEF") != "" || text[3] != '-' || strings.Trim(text[4:], "0123456789") != "" {
			t.Errorf("regex: %q %v", text, err)
		}
	}
	// An unsupported schema is an error, not an unconstrained answer.
	s := m.Generate(ctx, "x", WithJSONSchema(map[string]any{"type": "strnig"}))
	if _, _, err := s.Text(); err == nil || !strings.Contains(err.Error(), "constraint") {
		t.Errorf("unsupported schema: %v", err)
	}
}

func TestToolCallRoundTrip(t *testing.T) {
	m, ref := toolFixture(t)
	ctx := context.Background()
	first := []Message{{Role: "user", Content: "Weather in Paris?"}}
	// The prompt with the tools is transformers' render.
	got, err := m.RenderChat(first, WithTools(ref.Tools...))
	if err != nil {
		t.Fatal(err)
	}
	if got != ref.FirstRendered {
		t.Fatalf("first prompt:\n%s\nwant (transformers):\n%s", got, ref.FirstRendered)
	}
	var want ToolCall
	if err := json.Unmarshal(ref.Call, &want); err != nil {
		t.Fatal(err)
	}
	for _, choice := range []GenerateOption{WithToolChoice("required"), WithToolChoiceFunction("get_weather")} {
		var calls []ToolCall
		var text strings.Builder
		s := m.Chat(ctx, first, WithTools(ref.Tools...), choice, WithTemperature(1), WithSeed(3), WithMaxTokens(200))
		for tok := range s.Tokens() {
			text.WriteString(tok.Text)
			calls = append(calls, tok.ToolCalls...)
		}
		if err := s.Err(); err != nil {
			t.Fatal(err)
		}
		if len(calls) != 1 || calls[0].ID != want.ID || calls[0].Type != "function" || calls[0].Function.Name != "get_weather" {
			t.Fatalf("calls %+v, want one like %+v", calls, want)
		}
		var args map[string]any
		if err := json.Unmarshal(calls[0].Function.Arguments, &args); err != nil || !reflect.DeepEqual(args, map[string]any{"city": "Paris"}) {
			t.Fatalf("arguments %s: %v", calls[0].Function.Arguments, err)
		}
		if text.String() != "" {
			t.Errorf("text outside the call: %q", text.String())
		}
		// The call and the tool's result render through the template as transformers renders them.
		round := append(append([]Message{}, first...),
			Message{Role: "assistant", ToolCalls: calls},
			Message{Role: "tool", ToolCallID: calls[0].ID, Name: calls[0].Function.Name, Content: `{"temperature": 21.5}`})
		got, err := m.RenderChat(round, WithTools(ref.Tools...))
		if err != nil {
			t.Fatal(err)
		}
		if got != ref.RoundTripRendered {
			t.Fatalf("round trip:\n%s\nwant (transformers):\n%s", got, ref.RoundTripRendered)
		}
		if _, _, err := m.Chat(ctx, round, WithTools(ref.Tools...), WithMaxTokens(4)).Text(); err != nil {
			t.Fatal(err)
		}
		sess, err := m.NewSession()
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := sess.Chat(ctx, round, WithTools(ref.Tools...), WithMaxTokens(4)).Text(); err != nil {
			t.Fatal(err)
		}
		sess.Close()
	}
	// Errors name what is wrong.
	if _, _, err := m.Chat(ctx, first, WithTools(ref.Tools...), WithToolChoiceFunction("nope")).Text(); err == nil || !strings.Contains(err.Error(), "nope") {
		t.Errorf("unknown function: %v", err)
	}
	if _, _, err := m.Generate(ctx, "x", WithTools(ref.Tools...)).Text(); err == nil || !strings.Contains(err.Error(), "need a chat") {
		t.Errorf("tools without a chat: %v", err)
	}
}

func TestClassifyChoice(t *testing.T) {
	m, _ := toolFixture(t)
	ctx := context.Background()
	prompts := []string{"Is it raining? ", "Did you eat? ", "Answer: "}
	labels := []string{"yes", "yesterday", "no"}
	picks, bm, err := m.ClassifyChoice(ctx, prompts, labels)
	if err != nil {
		t.Fatal(err)
	}
	if len(picks) != len(prompts) || bm.Prompts != len(prompts) {
		t.Fatalf("picks %v, metrics %+v", picks, bm)
	}
	for i, p := range prompts {
		// The same as one greedy generation under the choice constraint.
		text, _, err := m.Generate(ctx, p, WithChoice(labels...)).Text()
		if err != nil {
			t.Fatal(err)
		}
		if picks[i] < 0 || picks[i] >= len(labels) || labels[picks[i]] != text {
			t.Errorf("prompt %d: pick %d, generation %q", i, picks[i], text)
		}
	}
	// First-token classify cannot tell these labels apart.
	if _, _, err := m.Classify(ctx, prompts, WithLabels(labels...)); err == nil {
		t.Error("Classify WithLabels accepted labels sharing a first token")
	}
	if _, _, err := m.ClassifyChoice(ctx, prompts, nil); err == nil || !strings.Contains(err.Error(), "label set is empty") {
		t.Errorf("empty labels: %v", err)
	}
}
