// Command ollama-client streams a chat from a gomlx server through Ollama's own
// Go client (github.com/ollama/ollama/api), unchanged, and checks the answer.
//
//	OLLAMA_HOST=http://127.0.0.1:8090 go run . MODEL
package main

import (
	"context"
	"fmt"
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
	if len(os.Args) != 2 {
		fail("usage: ollama-client MODEL (server from OLLAMA_HOST)")
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
}
