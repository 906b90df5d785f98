package gomlx

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A session saved to a file and loaded again continues the conversation
// without evaluating its past turns, and answers as the original does.
func TestSessionSaveAndLoad(t *testing.T) {
	ctx := context.Background()
	m := smol(t)
	s, err := m.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	path := filepath.Join(t.TempDir(), "session.safetensors")
	if err := s.Save(path); err == nil || !strings.Contains(err.Error(), "no cache") {
		t.Fatalf("save of an empty session: %v", err)
	}
	first, _, err := s.Chat(ctx, question, WithMaxTokens(12)).Text()
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Save(path); err != nil {
		t.Fatal(err)
	}
	loaded, err := m.LoadSession(path)
	if err != nil {
		t.Fatal(err)
	}
	defer loaded.Close()
	turn2 := append(append([]Message{}, question...), Message{Role: "assistant", Content: first}, Message{Role: "user", Content: "And of Italy?"})
	want := s.Chat(ctx, turn2, WithMaxTokens(12))
	wantText, _, err := want.Text()
	if err != nil {
		t.Fatal(err)
	}
	got := loaded.Chat(ctx, turn2, WithMaxTokens(12))
	gotText, _, err := got.Text()
	if err != nil || gotText != wantText {
		t.Fatalf("loaded session: %q (%v), original: %q", gotText, err, wantText)
	}
	mt, err := got.Metrics()
	if err != nil || mt.PromptTokensEvaluated >= mt.PromptTokens {
		t.Fatalf("the loaded cache was not reused: %+v %v", mt, err)
	}
	bad := filepath.Join(t.TempDir(), "bad.safetensors")
	if err := os.WriteFile(bad, []byte("not a cache"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := m.LoadSession(bad); err == nil {
		t.Fatal("a file that is not a cache loaded")
	}
}

// With a prefix cache, a repeated prompt prefix is not evaluated again.
func TestPrefixCache(t *testing.T) {
	ctx := context.Background()
	m, err := LoadModel(chatModelPath, WithContextLength(2048), WithPrefixCache(256<<20))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	want, _, err := smol(t).Chat(ctx, question, WithMaxTokens(8)).Text()
	if err != nil {
		t.Fatal(err)
	}
	var evaluated []int
	for range 2 {
		s := m.Chat(ctx, question, WithMaxTokens(8))
		text, _, err := s.Text()
		if err != nil || text != want {
			t.Fatalf("%q (%v), want %q", text, err, want)
		}
		mt, _ := s.Metrics()
		evaluated = append(evaluated, mt.PromptTokensEvaluated)
	}
	if evaluated[1] != 1 || evaluated[0] <= 1 {
		t.Fatalf("prompt tokens evaluated: %v (the second should reuse all but one)", evaluated)
	}
	if n, err := m.ClearPrefixCache(); err != nil || n == 0 {
		t.Fatalf("clear: %d %v", n, err)
	}
	if n, _ := m.ClearPrefixCache(); n != 0 {
		t.Fatalf("second clear: %d", n)
	}
}
