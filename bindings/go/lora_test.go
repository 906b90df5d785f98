package gomlx

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// One line of tests/c/expected_lora.txt (tests/c_expected.rs, from the
// adapters mlx-lm wrote by scripts/lora-oracle): a prompt and mlx-lm's logits
// after its last token with the adapter applied.
type loraCase struct {
	name, model, adapter string
	ids                  []uint32
	logits               []float32
}

func readExpectedLoRA(t *testing.T) []loraCase {
	t.Helper()
	var out []loraCase
	for _, fs := range expectedLines(t, "expected_lora.txt") {
		c := loraCase{name: fs[0], model: fs[1], adapter: fs[2]}
		n, err := strconv.Atoi(fs[3])
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range fs[4 : 4+n] {
			v, err := strconv.ParseUint(s, 10, 32)
			if err != nil {
				t.Fatal(err)
			}
			c.ids = append(c.ids, uint32(v))
		}
		v, err := strconv.Atoi(fs[4+n])
		if err != nil || len(fs) != 5+n+v {
			t.Fatalf("bad line for %s", c.name)
		}
		for _, s := range fs[5+n:] {
			x, err := strconv.ParseFloat(s, 32)
			if err != nil {
				t.Fatal(err)
			}
			c.logits = append(c.logits, float32(x))
		}
		out = append(out, c)
	}
	return out
}

// relErr is max |a - b| / max |b|.
func relErr(a, b []float32) float64 {
	if len(a) != len(b) {
		return math.Inf(1)
	}
	scale, worst := 1e-12, 0.0
	for i := range a {
		scale = math.Max(scale, math.Abs(float64(b[i])))
		worst = math.Max(worst, math.Abs(float64(a[i]-b[i])))
	}
	return worst / scale
}

func lastLogits(t *testing.T, m *Model, ids []uint32) []float32 {
	t.Helper()
	res, _, err := m.ClassifyTokens(context.Background(), [][]uint32{ids}, WithLogits())
	if err != nil {
		t.Fatal(err)
	}
	return res[0].Logits
}

func TestAdapterGivesMLXLMLogits(t *testing.T) {
	cases := readExpectedLoRA(t)
	if len(cases) < 6 {
		t.Fatalf("%d lines in expected_lora.txt", len(cases))
	}
	for _, c := range cases {
		t.Run(fmt.Sprintf("%s/%d", c.name, len(c.ids)), func(t *testing.T) {
			model := filepath.Join(root, c.model)
			m, err := LoadModel(model, WithDevice(DeviceCPU), WithAdapter(filepath.Join(root, c.adapter)))
			if err != nil {
				t.Fatal(err)
			}
			if e := relErr(lastLogits(t, m, c.ids), c.logits); e >= 1e-4 {
				t.Errorf("logits relative error %g against mlx-lm", e)
			}
			m.Close()
			plain, err := LoadModel(model, WithDevice(DeviceCPU))
			if err != nil {
				t.Fatal(err)
			}
			defer plain.Close()
			if e := relErr(lastLogits(t, plain, c.ids), c.logits); e <= 1e-3 {
				t.Errorf("without the adapter the logits are within %g", e)
			}
		})
	}
	_, err := LoadModel(filepath.Join(root, "tests/fixtures/models/llama_tied"), WithAdapter(filepath.Join(root, "tests/fixtures/lora/gemma3_text/adapter")))
	var gerr *Error
	if !errors.As(err, &gerr) || gerr.Op != "gm_model_load" || !strings.Contains(gerr.Msg, "does not fit the model") {
		t.Fatal(err)
	}
}

// loraFixture writes llama_tied with the character tokenizer (a model
// TrainLoRA accepts) and a small counting data set; returns (model, data).
func loraFixture(t *testing.T) (string, string) {
	t.Helper()
	dir := t.TempDir()
	model := filepath.Join(dir, "model")
	if err := os.Mkdir(model, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"models/llama_tied/config.json", "models/llama_tied/model.safetensors", "lora/tokenizer/tokenizer.json", "lora/tokenizer/tokenizer_config.json"} {
		src, err := os.Open(filepath.Join(root, "tests", "fixtures", f))
		if err != nil {
			t.Fatal(err)
		}
		dst, err := os.Create(filepath.Join(model, filepath.Base(f)))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.Copy(dst, src); err != nil {
			t.Fatal(err)
		}
		src.Close()
		if err := dst.Close(); err != nil {
			t.Fatal(err)
		}
	}
	var data strings.Builder
	for i := range 12 {
		fmt.Fprintf(&data, "{\"prompt\": \"count %d\", \"completion\": \"%d %d %d\"}\n", i, i+1, i+2, i+3)
	}
	path := filepath.Join(dir, "train.jsonl")
	if err := os.WriteFile(path, []byte(data.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	return model, path
}

func loraOpts(adapters string) LoRAOptions {
	return LoRAOptions{AdapterPath: adapters, Targets: []string{"q_proj", "v_proj", "down_proj"}, Iters: 12, BatchSize: 4, Rank: 4, LearningRate: 1e-2, Seed: 3}
}

func TestTrainLoRA(t *testing.T) {
	model, data := loraFixture(t)
	adapters := filepath.Join(t.TempDir(), "adapters")
	var steps []int
	var first float32
	res, err := TrainLoRA(context.Background(), model, data, loraOpts(adapters), func(p LoRAProgress) bool {
		steps = append(steps, p.Step)
		if p.Step == 1 {
			first = p.Loss
		}
		if p.Iters != 12 || p.TrainedTokens == 0 || !math.IsNaN(float64(p.ValLoss)) {
			t.Errorf("progress %+v", p)
		}
		return true
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Steps != 12 || res.Stop != LoRACompleted || len(steps) != 12 || steps[0] != 1 || steps[11] != 12 {
		t.Fatalf("result %+v, steps %v", res, steps)
	}
	if res.FirstLoss != first || !(res.LastLoss < 0.8*res.FirstLoss) {
		t.Fatalf("loss %g -> %g (first seen %g): it did not fall", res.FirstLoss, res.LastLoss, first)
	}
	if res.TrainedTokens == 0 || res.Duration <= 0 || res.PeakMemory == 0 || !math.IsNaN(float64(res.LastValLoss)) {
		t.Fatalf("result %+v", res)
	}
	// The saved adapter loads back and changes the model.
	base, err := LoadModel(model, WithDevice(DeviceCPU))
	if err != nil {
		t.Fatal(err)
	}
	defer base.Close()
	tuned, err := LoadModel(model, WithDevice(DeviceCPU), WithAdapter(adapters))
	if err != nil {
		t.Fatal(err)
	}
	defer tuned.Close()
	ids := []uint32{40, 50, 60, 70}
	if e := relErr(lastLogits(t, tuned, ids), lastLogits(t, base, ids)); e <= 1e-3 {
		t.Fatalf("the trained adapter changes the logits by %g only", e)
	}
}

func TestTrainLoRAStops(t *testing.T) {
	model, data := loraFixture(t)
	dir := t.TempDir()

	// The callback stops after step 3; the adapters are still saved.
	res, err := TrainLoRA(context.Background(), model, data, loraOpts(filepath.Join(dir, "stopped")), func(p LoRAProgress) bool { return p.Step < 3 })
	if err != nil || res.Steps != 3 || res.Stop != LoRAStoppedByCallback {
		t.Fatalf("callback stop: %+v, %v", res, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "stopped", "adapters.safetensors")); err != nil {
		t.Fatal(err)
	}

	// Cancelled from another goroutine while step 2's callback waits: step 3 sees it.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	res, err = TrainLoRA(ctx, model, data, loraOpts(filepath.Join(dir, "cancelled")), func(p LoRAProgress) bool {
		if p.Step == 2 {
			go cancel()
			<-ctx.Done()
		}
		if p.Step > 2 {
			t.Errorf("callback at step %d after the cancel", p.Step)
		}
		return true
	})
	if !errors.Is(err, context.Canceled) || res.Steps != 3 || res.Stop != LoRACancelled {
		t.Fatalf("cancel: %+v, %v", res, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "cancelled", "adapters.safetensors")); err != nil {
		t.Fatal(err)
	}

	// An already cancelled context never starts.
	res, err = TrainLoRA(ctx, model, data, loraOpts(filepath.Join(dir, "never")), nil)
	if !errors.Is(err, context.Canceled) || res.Steps != 0 {
		t.Fatalf("pre-cancelled: %+v, %v", res, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "never")); !os.IsNotExist(err) {
		t.Fatalf("a cancelled run wrote %v", err)
	}
}

func TestTrainLoRAErrors(t *testing.T) {
	model, data := loraFixture(t)
	ctx := context.Background()
	var gerr *Error
	_, err := TrainLoRA(ctx, model, "/nonexistent/train.jsonl", loraOpts(t.TempDir()), nil)
	if !errors.As(err, &gerr) || gerr.Op != "gm_lora_train" || !strings.Contains(gerr.Msg, "/nonexistent/train.jsonl") {
		t.Fatal(err)
	}
	o := loraOpts(t.TempDir())
	o.Targets = []string{"q_proj", "nose"}
	if _, err := TrainLoRA(ctx, model, data, o, nil); err == nil || !strings.Contains(err.Error(), "unknown LoRA target 'nose'") {
		t.Fatal(err)
	}
	o = loraOpts(t.TempDir())
	o.Iters = -1
	if _, err := TrainLoRA(ctx, model, data, o, nil); err == nil || !strings.Contains(err.Error(), "iters -1") {
		t.Fatal(err)
	}
	if _, err := TrainLoRA(ctx, model, data, LoRAOptions{}, nil); err == nil || !strings.Contains(err.Error(), "nowhere to save") {
		t.Fatal(err)
	}
	// A panic in the callback comes back out of TrainLoRA, after the engine has stopped.
	func() {
		defer func() {
			if v := recover(); v != "boom" {
				t.Fatalf("recovered %v", v)
			}
		}()
		TrainLoRA(ctx, model, data, loraOpts(t.TempDir()), func(p LoRAProgress) bool { panic("boom") })
		t.Fatal("no panic")
	}()
}
