// Command chat streams a chat reply: chat MODEL "question".
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"

	"gomlx.dev/gomlx"
)

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: chat MODEL QUESTION")
		os.Exit(2)
	}
	m, err := gomlx.LoadModel(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	defer m.Close()
	// Ctrl-C cancels the generation.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	s := m.Chat(ctx, []gomlx.Message{{Role: "user", Content: os.Args[2]}}, gomlx.WithMaxTokens(256))
	for tok := range s.Tokens() {
		fmt.Print(tok.Text)
	}
	fmt.Println()
	if err := s.Err(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if mt, err := s.Metrics(); err == nil {
		fmt.Fprintf(os.Stderr, "%d prompt tokens, %d generated, %.1f tokens/s (%s)\n", mt.PromptTokens, mt.GeneratedTokens, mt.DecodeTokensPerSec, mt.FinishReason)
	}
}
