package gomlx

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The GGUF file converted (quantised blocks kept) loads as a directory and
// answers with the same greedy tokens as the file itself.
func TestConvertKeepsTheModel(t *testing.T) {
	ctx := context.Background()
	out := filepath.Join(t.TempDir(), "smollm2")
	var calls, last, total int
	err := Convert(ctx, chatModelPath, out, ConvertOptions{Mode: ConvertKeep}, func(done, n int) bool {
		calls, last, total = calls+1, done, n
		return true
	})
	if err != nil {
		t.Fatal(err)
	}
	if total < 100 || calls != total || last != total {
		t.Fatalf("progress: %d calls, last %d of %d", calls, last, total)
	}
	for _, f := range []string{"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} {
		if _, err := os.Stat(filepath.Join(out, f)); err != nil {
			t.Fatal(err)
		}
	}
	dir, err := LoadModel(out, WithDevice(DeviceCPU))
	if err != nil {
		t.Fatal(err)
	}
	defer dir.Close()
	want, _, err := smol(t).Chat(ctx, question, WithMaxTokens(12)).Text()
	if err != nil {
		t.Fatal(err)
	}
	got, _, err := dir.Chat(ctx, question, WithMaxTokens(12)).Text()
	if err != nil || got != want {
		t.Fatalf("converted model: %q (%v), the GGUF file: %q", got, err, want)
	}
	// The callback stops a conversion; a missing file and bad options are errors.
	err = Convert(ctx, chatModelPath, filepath.Join(t.TempDir(), "x"), ConvertOptions{}, func(done, n int) bool { return done < 3 })
	if err == nil || !strings.Contains(err.Error(), "stopped") {
		t.Fatalf("stopped conversion: %v", err)
	}
	if err := Convert(ctx, "/nonexistent.gguf", out, ConvertOptions{}, nil); err == nil || !strings.Contains(err.Error(), "nonexistent") {
		t.Fatalf("missing file: %v", err)
	}
	if err := Convert(ctx, chatModelPath, out, ConvertOptions{Mode: ConvertQuantize, Bits: 7}, nil); err == nil || !strings.Contains(err.Error(), "bits") {
		t.Fatalf("7 bits: %v", err)
	}
}

// Discover lists GGUF files as gomlx discover does.
func TestDiscoverFindsGGUF(t *testing.T) {
	found, err := Discover(filepath.Dir(chatModelPath))
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(chatModelPath)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range found {
		if strings.HasSuffix(d.Path, filepath.Base(chatModelPath)) {
			if d.Format != "gguf" || d.Architecture != "llama" || !d.Supported || d.SizeBytes != uint64(st.Size()) {
				t.Fatalf("%+v", d)
			}
			return
		}
	}
	t.Fatalf("SmolLM2 not among %+v", found)
}

// Knobs set through WithTuning change the product paths, not the answers.
func TestTuningKeepsAnswers(t *testing.T) {
	ctx := context.Background()
	want, _, err := smol(t).Chat(ctx, question, WithMaxTokens(8)).Text()
	if err != nil {
		t.Fatal(err)
	}
	m, err := LoadModel(chatModelPath, WithContextLength(2048), WithTuning(Tuning{Widen: Bool(false), CPUDenseQMMRows: -1, CPUSplitOut: -1, Compile: Bool(false)}))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	got, _, err := m.Chat(ctx, question, WithMaxTokens(8)).Text()
	if err != nil || got != want {
		t.Fatalf("tuned: %q (%v), default: %q", got, err, want)
	}
	if _, err := LoadModel(chatModelPath, WithTuning(Tuning{BLASThreads: -1})); err == nil {
		t.Fatal("negative BLAS threads")
	}
}
